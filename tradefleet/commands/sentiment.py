"""`tradefleet sentiment score`: the registry's sentiment model over stdin, for a quick look."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer

from tradefleet.commands.common import ConfigOpt, fail, load

if TYPE_CHECKING:
    from models.sentiment.serving import Scorer
    from services.sentiment.tagging import Tagger

app = typer.Typer(no_args_is_help=True, help="the sentiment model from the shell")

# libs.common.config SentimentSettings.engine: auto is what training measured fastest.
Engine = Literal["auto", "onnx-int8", "onnx", "torch"]


@app.command("score")
def score(
    engine: Annotated[
        Engine, typer.Option(help="inference engine (auto: the one training measured)")
    ] = "auto",
    model_path: Annotated[
        Path | None, typer.Option(help="a FinBERT-class classifier folder instead of the registry's")
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """One text per line on stdin; one JSON object per line out: label, probabilities, polarity,
    and the tickers and event tags the sentiment service would attach."""
    from libs.common.logging import setup_logging
    from models.sentiment.serving import HfScorer, ModelUnavailable, load_active
    from services.sentiment.tagging import Tagger

    # stdout carries the JSON lines only; which engine serves is said once, below, not as a
    # warning per engine the loader tried and refused on this CPU.
    setup_logging("sentiment-cli", "ERROR")
    st = load(config).sentiment
    try:
        path = model_path or st.model_path
        scorer = HfScorer(path) if path else load_active(st.registry, engine, st.cache)
    except (ModelUnavailable, OSError, ValueError) as exc:
        fail(f"no sentiment model: {exc}", 1)
    if scorer is None:
        fail(f"no active sentiment model under {st.registry}", 1)
    typer.echo(f"sentiment model {scorer.version} served by {scorer.engine}", err=True)
    tagger = Tagger(st.companies)
    for line in sys.stdin:
        typer.echo(json.dumps(_scored(scorer, tagger, " ".join(line.split()))))
        sys.stdout.flush()


def _scored(scorer: Scorer, tagger: Tagger, text: str) -> dict[str, Any]:
    from models.sentiment.serving import LABELS

    if not text:
        return {"error": "empty line"}
    probs, _ = scorer.predict([text])
    p = [round(float(x), 6) for x in probs[0]]
    return {
        "text": text,
        "label": LABELS[max(range(3), key=p.__getitem__)],
        "probabilities": dict(zip(LABELS, p, strict=True)),
        "polarity": round(p[2] - p[0], 6),
        "tickers": tagger.tickers(text),
        "events": tagger.events(text),
        "model_version": scorer.version,
        "engine": scorer.engine,
    }
