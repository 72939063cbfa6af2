"""JSON Schema export of every event and of the subject catalog, for non-Python consumers."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec

from proto import SCHEMA_VERSION
from proto.events import EVENT_TYPES, Batch
from proto.subjects import catalog_as_dict

SCHEMA_DIR = Path(__file__).parent / "schemas"


def render() -> dict[str, str]:
    """File name -> file text, deterministic so a stale checked-in copy is detectable."""
    schemas, components = msgspec.json.schema_components([*EVENT_TYPES, Batch])
    files: dict[str, str] = {}
    types: list[type] = [*EVENT_TYPES, Batch]
    for event_type, schema in zip(types, schemas, strict=True):
        name = event_type.__name__
        doc = {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": name,
            "x-schema-version": SCHEMA_VERSION,
            "x-wire": "msgpack array: [tag, fields in declaration order]",
            **schema,
            "$defs": components,
        }
        files[f"{name}.json"] = _dump(doc)
    files["catalog.json"] = _dump({"schema_version": SCHEMA_VERSION, **catalog_as_dict()})
    return files


def _dump(doc: object) -> str:
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"


def export(directory: Path = SCHEMA_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    wanted = render()
    for stale in directory.glob("*.json"):
        if stale.name not in wanted:
            stale.unlink()
    for name, text in wanted.items():
        path = directory / name
        path.write_text(text)
        written.append(path)
    return written


def stale_files(directory: Path = SCHEMA_DIR) -> list[str]:
    """Names whose checked-in text differs from what the code renders (empty when fresh)."""
    wanted = render()
    present = {p.name for p in directory.glob("*.json")}
    stale = [n for n, t in wanted.items() if not (directory / n).exists() or (directory / n).read_text() != t]
    stale += sorted(present - wanted.keys())
    return sorted(stale)
