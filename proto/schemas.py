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
    files["SUBJECTS.md"] = _catalog_markdown()
    return files


def _catalog_markdown() -> str:
    """The catalog for people: who publishes what, where, and how durably."""
    cat = catalog_as_dict()
    lines = [
        "# Subject catalog",
        "",
        "Generated from proto/subjects.py by `tradefleet schemas export`; a test fails when it is stale.",
        "Tokens in braces are filled per message (symbols travel with '.' replaced by '_').",
        "",
        "| subject | events | transport | stream | producer | what |",
        "|---|---|---|---|---|---|",
    ]
    for s in cat["subjects"]:  # type: ignore[attr-defined]
        lines.append(
            f"| `{s['subject']}` | {', '.join(s['events'])} | {s['transport']} | {s['stream'] or ''} "
            f"| {s['producer']} | {s['description']} |"
        )
    lines += [
        "",
        "## JetStream streams",
        "",
        "| stream | subjects | retention | dedupe window |",
        "|---|---|---|---|",
    ]
    for st in cat["streams"]:  # type: ignore[attr-defined]
        lines.append(
            f"| {st['name']} | `{' '.join(st['subjects'])}` | {st['max_age_s'] // 86400} days "
            f"| {st['duplicate_window_s']} s |"
        )
    lines += ["", "## Services", "", "| service | role | built in issue |", "|---|---|---|"]
    for sv in cat["services"]:  # type: ignore[attr-defined]
        lines.append(f"| {sv['name']} | {sv['role']} | #{sv['since_issue']} |")
    return "\n".join(lines) + "\n"


def _dump(doc: object) -> str:
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"


def export(directory: Path = SCHEMA_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    wanted = render()
    for stale in [*directory.glob("*.json"), *directory.glob("*.md")]:
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
    present = {p.name for p in [*directory.glob("*.json"), *directory.glob("*.md")]}
    stale = [n for n, t in wanted.items() if not (directory / n).exists() or (directory / n).read_text() != t]
    stale += sorted(present - wanted.keys())
    return sorted(stale)
