"""News files for replays: CSV and JSON lines, times with and without offsets, bad rows counted."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from libs.common.markettime import ny_midnight_ns
from libs.common.news_file import NewsFile, parse_time

DAY = ny_midnight_ns("20131008")
BENZINGA = Path(__file__).resolve().parents[3] / "shared" / "data" / "news" / "benzinga_headlines"


def test_times() -> None:
    assert parse_time("2013-10-08 09:31:00") == DAY + (9 * 3600 + 31 * 60) * 10**9  # naive: New York
    assert parse_time("2013-10-08T13:31:00Z") == DAY + (9 * 3600 + 31 * 60) * 10**9
    assert parse_time("2013-10-08 09:31:00-04:00") == DAY + (9 * 3600 + 31 * 60) * 10**9
    s = 1_381_239_060
    assert parse_time(s) == parse_time(s * 1000) == parse_time(str(s * 10**9)) == s * 10**9
    assert parse_time("yesterday") is None and parse_time(None) is None and parse_time(12) is None


def test_jsonl_and_csv_in_time_order_with_bad_rows_counted(tmp_path: Path) -> None:
    jl = tmp_path / "day.jsonl"
    rows = [
        {"ts": "2013-10-08 10:05:00", "headline": "IBM later", "symbols": ["IBM"]},
        {"ts": "2013-10-08 09:45:00", "headline": "BAC first", "symbol": "$bac", "id": "7", "source": "wire"},
        {"ts": "not a time", "headline": "lost"},
        {"ts": "2013-10-08 09:50:00", "headline": "  "},
        {"ts": "2013-10-09 09:50:00", "headline": "tomorrow"},
    ]
    jl.write_text("\n".join(json.dumps(r) for r in rows) + "\n{broken\n")
    f = NewsFile(jl, DAY, DAY + 86_400 * 10**9)
    recs = f.records()
    assert [(r[2], r[3], r[5]) for r in recs] == [("BAC", "wire", "BAC first"), ("IBM", "file", "IBM later")]
    assert recs[0][4] == "wire:7" and recs[1][4].startswith("file:")
    assert dict(f.skipped) == {"bad_time": 1, "empty_headline": 1, "outside_replay": 1, "bad_json": 1}
    csv_file = tmp_path / "day.csv"
    csv_file.write_text(',title,date,stock\n0,"IBM up, a lot",2013-10-08 09:40:00-04:00,IBM\n')
    assert [r[5] for r in NewsFile(csv_file).records()] == ["IBM up, a lot"]
    with pytest.raises(FileNotFoundError):
        NewsFile(tmp_path / "missing.csv")


@pytest.mark.skipif(not BENZINGA.exists(), reason="the shared Benzinga headlines are not on this machine")
def test_the_benzinga_headlines_read_as_a_news_file() -> None:
    f = NewsFile(BENZINGA / "analyst_ratings_processed_first10k.csv")
    recs = f.records()
    assert len(recs) > 9_900 and f.skipped["bad_time"] >= 4  # the PROVENANCE's broken rows
    assert all(a[1] <= b[1] for a, b in itertools.pairwise(recs))
    assert {r[2] for r in recs} >= {"A", "AAPL"}
