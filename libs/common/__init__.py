"""Shared building blocks of every service: bus, codec, clock, config, logging, telemetry, storage."""
