"""The checked-in JSON Schemas match the code; a stale copy is detected."""

from __future__ import annotations

import json
from pathlib import Path

from proto import schemas


def test_checked_in_schemas_are_fresh() -> None:
    assert schemas.stale_files() == [], "run `tradefleet schemas export`"


def test_stale_schema_is_detected(tmp_path: Path) -> None:
    schemas.export(tmp_path)
    assert schemas.stale_files(tmp_path) == []
    quote = tmp_path / "Quote.json"
    doc = json.loads(quote.read_text())
    doc["title"] = "QuoteV0"
    quote.write_text(json.dumps(doc))
    (tmp_path / "Removed.json").write_text("{}")
    assert schemas.stale_files(tmp_path) == ["Quote.json", "Removed.json"]


def test_catalog_export_names_streams_and_producers() -> None:
    catalog = json.loads(schemas.render()["catalog.json"])
    fills = next(s for s in catalog["subjects"] if s["subject"] == "exec.fill.{symbol}")
    assert fills == {
        **fills,
        "transport": "jetstream",
        "stream": "EXEC",
        "producer": "execution",
        "events": ["Fill"],
    }
