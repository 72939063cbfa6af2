"""The single source of truth for tradefleet's events and subjects.

Every event is a frozen, tagged msgspec Struct carrying ``ts_event`` (when it happened at the
source) and ``ts_init`` (when this process made it), both integer nanoseconds UTC.
"""

SCHEMA_VERSION = 1
