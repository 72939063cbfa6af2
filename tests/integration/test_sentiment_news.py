"""The sentiment model on news-style headlines (models/sentiment/news_eval.py): the label is the
analyst action a headline reports, and the served engine is scored on the real Benzinga
headlines when ../shared/data is present (vendor content: not shipped, so the run skips
without it)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from libs.common.config import load_settings
from models.sentiment import news_eval, serving
from models.sentiment import train as training
from models.sentiment.report import write_report
from tests.conftest import shared_path
from tradefleet.cli import app as cli

BENZINGA = shared_path("news", "benzinga_headlines")
POSITIVE, NEGATIVE = news_eval.POSITIVE, news_eval.NEGATIVE


@pytest.mark.parametrize(
    ("title", "label"),
    [
        ("Acme Securities Upgrades Foo Corp to Buy", POSITIVE),
        ("UPDATE: Bar Partners Upgraded Foo to Overweight on Margins", POSITIVE),
        ("Baz Capital Maintains Neutral on Foo Corp, Raises Price Target to $10", POSITIVE),
        ("Qux Maintains Foo at Buy, Raises PT from $47 to $51", POSITIVE),
        ("Baz Capital Downgrades Foo Corp to Sell", NEGATIVE),
        ("Qux Maintains Buy on Foo, Lowers Price Target to $9", NEGATIVE),
        ("Qux Maintains Foo at Buy, Lowers PT from $51 to $47", NEGATIVE),
        ("Qux Cuts Price Target on Foo", NEGATIVE),
        ("Benzinga's Top Upgrades, Downgrades For May 1, 2020", None),  # a roundup of many
        ("Acme Upgrades Foo to Buy, Lowers Price Target to $8", None),  # both ways
        ("Analyst Still Bullish On Foo Despite Downgrade", None),  # a mention, not the action
        ("Stocks That Hit 52-Week Highs On Friday", None),
        ("Acme Initiates Coverage On Foo with Neutral Rating", None),
    ],
)
def test_the_label_is_the_analyst_action_the_headline_reports(title: str, label: int | None) -> None:
    assert news_eval.analyst_action_label(title) == label


def test_a_file_without_analyst_actions_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "analyst_ratings_none.csv"
    data.write_text(",title,date,stock\n0,Stocks That Hit 52-Week Highs On Friday,2020-06-05,A\n")
    with pytest.raises(ValueError, match="no headline reports an analyst action"):
        news_eval.load_analyst_headlines(tmp_path)
    with pytest.raises(FileNotFoundError):
        news_eval.load_analyst_headlines(tmp_path / "missing")
    # the command says so before it trains or measures anything
    root = load_settings(None).sentiment.registry
    version = serving.active_version(root) or ""
    registry = tmp_path / "registry"
    shutil.copytree(root, registry)
    meta = serving.kind_dir(registry) / version / "meta.json"
    before = meta.read_bytes()
    for news, said in ((tmp_path / "missing", "does not exist"), (tmp_path, "no headline reports")):
        args = ["train", "sentiment", "--registry", str(registry), "--remeasure", version]
        result = CliRunner().invoke(cli, [*args, "--news-eval", str(news)], env={"COLUMNS": "240"})
        assert result.exit_code == 2 and said in result.output, result.output
    assert meta.read_bytes() == before  # nothing was measured again


@pytest.mark.skipif(not BENZINGA.exists(), reason="../shared/data/news is not here (not shipped)")
def test_the_served_model_reads_analyst_headlines_right(tmp_path: Path) -> None:
    root = load_settings(None).sentiment.registry
    version = serving.active_version(root)
    assert version is not None
    meta = serving.read_meta(root, version)
    news = training.evaluate_news(root, version, meta, BENZINGA, news_eval.load_analyst_headlines(BENZINGA))
    assert news["n"] >= 900 and news["positive"] >= 400 and news["negative"] >= 400
    assert news["engine"] == meta["serving"]["engine"]
    # Direction is what the tweets taught; an analyst action is not neutral, so a neutral answer
    # is a miss: it costs accuracy, and the share is reported.
    assert news["directional_accuracy"] >= 0.9 and news["accuracy"] >= 0.65
    assert 0.1 <= news["answered_neutral"] <= 0.4
    assert news["macro_f1"] >= 0.75 and news["ece"] <= 0.1
    assert set(news["per_class"]) == {"negative", "positive"}
    # the report carries it, beside the tweets' figures
    shutil.copytree(serving.kind_dir(root) / version, tmp_path / "v", dirs_exist_ok=True)
    write_report({**meta, "news": news}, tmp_path / "v")
    page = (tmp_path / "v" / "report.html").read_text()
    assert "News headlines (another domain)" in page and f"{news['accuracy']:.4f}" in page
    assert json.loads((tmp_path / "v" / "report.json").read_text())["news"]["n"] == news["n"]
