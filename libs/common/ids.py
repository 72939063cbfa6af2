"""Identifiers that are stable across restarts (derived, not random, where a retry must match)."""

from __future__ import annotations

import hashlib
import uuid


def new_id() -> str:
    return uuid.uuid4().hex


def digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=12).hexdigest()
