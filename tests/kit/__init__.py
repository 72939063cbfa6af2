"""The test kit: event stubs with sensible defaults (``stubs``), one valid instance of every event
type (``samples``), the moments tests share (``clocks``) and the cores built from their settings
(``cores``). Tests import from here instead of building events and configs by hand."""
