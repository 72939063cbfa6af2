"""The sentiment report of the shipped model, written again: a legible confusion matrix (counts and
row shares, text contrasting with each cell) and plots whose axes, titles and legends are text."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from models.sentiment.report import contrast_ratio, write_report
from models.shared import active_in

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "models" / "registry" / "sentiment"
CELL = re.compile(
    r'<td class="cell" style="background:#(\w{6});color:#(\w{6})">(\d+)<br><small>(\d+)% of row'
)
SVG_NS = "{http://www.w3.org/2000/svg}"


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str]:
    version = active_in(SHIPPED)
    assert version is not None, "the repo ships an active sentiment model"
    meta = json.loads((SHIPPED / version / "meta.json").read_text())
    folder = tmp_path_factory.mktemp("sentiment-report")
    write_report(meta, folder)
    return meta, (folder / "report.html").read_text()


def _rgb(hex6: str) -> tuple[float, float, float]:
    return (int(hex6[0:2], 16) / 255, int(hex6[2:4], 16) / 255, int(hex6[4:6], 16) / 255)


def test_every_confusion_cell_is_legible_with_its_count_and_row_share(
    written: tuple[dict[str, Any], str],
) -> None:
    meta, page = written
    cells = CELL.findall(page)
    matrix = meta["held_out"]["confusion"]
    assert [int(c[2]) for c in cells] == [n for row in matrix for n in row]
    for (fill, ink, count, share), row in zip(cells, [r for r in matrix for _ in r], strict=True):
        assert contrast_ratio(_rgb(fill), _rgb(ink)) >= 4.5, (fill, ink)  # WCAG AA for text
        assert int(share) == round(100 * int(count) / sum(row))
    # The shipped matrix has dark and light cells (neutral is 91% of its row): both inks are used.
    assert {c[1] for c in cells} == {"000000", "ffffff"}


def test_plot_text_names_every_axis_title_and_legend(written: tuple[dict[str, Any], str]) -> None:
    _, page = written
    svg = page[page.index("<svg") : page.index("</svg>") + len("</svg>")]
    texts = {t.text.strip() for t in ET.fromstring(svg).iter(f"{SVG_NS}text") if t.text}
    learning = {
        "learning curve",
        "epoch",
        "validation accuracy",
        "training loss",
        "training loss (cross-entropy)",
    }
    calibration = {"confidence (top class probability)", "accuracy", "perfect", "model"}
    assert learning | calibration <= texts, (learning | calibration) - texts
