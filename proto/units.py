"""Units shared by every layer, declared once: event times are integer nanoseconds UTC, and
costs, distances and returns are in basis points."""

from __future__ import annotations

MS_NS = 1_000_000
SECOND_NS = 1_000_000_000
MINUTE_NS = 60 * SECOND_NS
DAY_NS = 86_400 * SECOND_NS
BPS = 1e4  # basis points per unit: a return r is r * BPS bps
