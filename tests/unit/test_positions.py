"""Position accounting shared by risk and execution: adds, partial closes, flips, commissions."""

from __future__ import annotations

import pytest

from libs.common.positions import Position


def test_add_reduce_flip_and_close() -> None:
    p = Position()
    assert p.apply(100, 10.0, 1.0).opened  # opens: only the commission is realized
    p.apply(100, 11.0, 1.0)  # adds: average 10.50
    assert p.quantity == 200 and p.avg_price == pytest.approx(10.5)
    change = p.apply(-50, 12.0, 1.0)  # partial close: 50 x 1.50 - 1
    assert change.realized == pytest.approx(74.0) and not change.closed
    flip = p.apply(-200, 9.0, 1.0)  # closes 150 at 9 (-225) and opens 50 short at 9
    assert flip.realized == pytest.approx(-226.0) and flip.closed and flip.opened
    assert p.quantity == -50 and p.avg_price == 9.0
    p.mark = 8.0
    assert p.unrealized == pytest.approx(50.0)
    close = p.apply(50, 8.5, 1.0)
    assert close.closed and not close.opened and p.quantity == 0
    assert p.realized == pytest.approx(-1 - 1 + 74 - 226 + 25 - 1)
