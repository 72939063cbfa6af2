"""Live parameters: the sections an operator may change while the fleet runs (risk, qos, and
qos.exits as "exits"), validated by the same settings models the configuration loads, carried by
a ConfigChange on ctl.config.SECTION and applied by the services that own them.

One module for the sender (the control API validates before anything reaches the bus, and says
which field is wrong) and the receivers (which validate again: a change is applied whole or not
at all), so both always agree on what a section holds.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError

from libs.common.config import ExitSettings, QosSettings, RiskSettings, Settings
from proto.control import ConfigChange, ConfigSection, ControlAck

SectionModel = RiskSettings | QosSettings | ExitSettings


def current(settings: Settings, section: ConfigSection) -> SectionModel:
    if section == "risk":
        return settings.risk
    if section == "qos":
        return settings.qos
    return settings.qos.exits


def values_of(model: SectionModel) -> dict[str, Any]:
    """A section's values as JSON-able data; qos without its exits (a section of their own)."""
    data = model.model_dump(mode="json")
    if isinstance(model, QosSettings):
        data.pop("exits", None)
    return data


def validate(section: ConfigSection, base: SectionModel, values: dict[str, Any]) -> SectionModel:
    """``base`` with ``values`` laid over it, validated by the section's model (raises pydantic's
    ValidationError naming each wrong field). Unknown keys are errors too: a typo must not pass
    as a change that changed nothing."""
    known = values_of(base)
    model_type: type[BaseModel] = type(base)
    errors: list[Any] = [
        {"type": "extra_forbidden", "loc": (key,), "input": values[key]}
        for key in sorted(set(values) - set(known))
    ]
    merged = {**known, **{k: v for k, v in values.items() if k in known}}
    if isinstance(base, QosSettings):
        merged["exits"] = base.exits  # its own section: a qos change never touches it
    try:
        model = model_type.model_validate(merged)
    except ValidationError as exc:
        errors += [
            {
                "type": e["type"],
                "loc": e["loc"],
                "input": e["input"],
                **({"ctx": e["ctx"]} if "ctx" in e else {}),
            }
            for e in exc.errors()
        ]
    if errors:
        raise ValidationError.from_exception_data(model_type.__name__, errors)
    return model  # type: ignore[return-value]


def changes(before: SectionModel, after: SectionModel) -> dict[str, list[Any]]:
    """What moved: {key: [old, new]}."""
    old, new = values_of(before), values_of(after)
    return {k: [old.get(k), v] for k, v in new.items() if old.get(k) != v}


def ack(change: ConfigChange, service: str, now_ns: int, accepted: bool, summary: str) -> ControlAck:
    return ControlAck(
        ts_event=now_ns,
        ts_init=now_ns,
        command_id=change.change_id,
        command="config",
        service=service,
        accepted=accepted,
        summary=summary,
    )


def receive(change: ConfigChange, base: SectionModel) -> tuple[SectionModel | None, str]:
    """A receiver's check of a change: the validated section, or None and why it is refused."""
    try:
        return validate(change.section, base, change.values), ""
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        return None, f"refused: {problems}"


def summary(change: ConfigChange) -> str:
    """What an applied change moved, from its ``changed`` ({key: [old, new]}): the sender's word,
    said as it came (an entry that is not such a pair must not fail the change it describes,
    which the receiver has applied by now)."""
    if not change.changed:
        return f"{change.section}: nothing changed"
    moved = ", ".join(f"{k} {_move(v)}" for k, v in sorted(change.changed.items()))
    return f"{change.section} applied: {moved}"


def _move(entry: list[Any]) -> str:
    if len(entry) == 2:
        old, new = entry
        return f"{old!r} -> {new!r}"
    return repr(entry)
