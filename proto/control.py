"""Operator commands (API, Telegram, panic file) to the fleet."""

from __future__ import annotations

import math
from typing import Any, Literal, get_args

import msgspec

from proto.base import DurableEvent, Event, Identifier

Command = Literal[
    "kill",
    "resume",
    "flatten",
    "set_mode",
    "cancel_all",
    # one order: args client_order_id; replace also quantity (only down) and/or limit_price
    "cancel",
    "replace",
    # live parameters: not a Control but a ConfigChange (ctl.config.SECTION); its acks say this
    "config",
]
COMMANDS: tuple[Command, ...] = get_args(Command)
MODES = ("LIVE", "DEGRADED", "OBSERVE")  # what set_mode may ask for (EMERGENCY only by kill)

# Who answers each command with a ControlAck: a sender waits for exactly these.
RESPONDERS: dict[Command, tuple[str, ...]] = {
    "kill": ("risk", "execution"),
    "resume": ("risk", "execution"),
    "flatten": ("execution",),
    "set_mode": ("risk",),
    "cancel_all": ("execution",),
    "cancel": ("execution",),
    "replace": ("execution",),
}


class Control(DurableEvent, frozen=True, kw_only=True):
    command_id: Identifier
    command: Command
    issued_by: str
    args: dict[str, str] = {}

    def dedupe_key(self) -> str:
        return f"ctl:{self.command_id}"


ConfigSection = Literal["risk", "qos", "exits"]
CONFIG_SECTIONS: tuple[ConfigSection, ...] = get_args(ConfigSection)
# Who applies each section's live parameters (and answers with a ControlAck, command "config").
CONFIG_RESPONDERS: dict[ConfigSection, tuple[str, ...]] = {
    "risk": ("risk",),
    "qos": ("qos",),
    "exits": ("qos",),
}


class ConfigChange(DurableEvent, frozen=True, kw_only=True):
    """Live parameters of one section (risk, qos, or qos.exits as "exits"), as a whole after the
    change: the services that own the section apply ``values`` without a restart, after
    validating them with the same settings model (services read the section's last change again
    when they start, so a restart keeps it). ``changed`` says what moved ({key: [old, new]}).
    Sent by the control API; stored in CONTROL and in the audit trail like every ctl.*."""

    change_id: Identifier
    section: ConfigSection
    values: dict[str, Any]
    changed: dict[str, list[Any]] = {}
    issued_by: str

    def dedupe_key(self) -> str:
        return f"config:{self.change_id}"


class ControlAck(DurableEvent, frozen=True, kw_only=True):
    """What a service did about a Control: ``accepted`` False says it refused (and ``summary``
    why), so an operator never mistakes a command that was heard for one that was obeyed."""

    command_id: Identifier
    command: Command
    service: str
    accepted: bool
    summary: str
    counts: dict[str, float] = {}

    def dedupe_key(self) -> str:
        return f"ack:{self.service}:{self.command_id}"


# A command older than this when a service reads it (a service that was down when it was sent,
# a stream replayed at start) is acked as expired and not acted on: a stale `resume` or
# `set_mode LIVE` must never take effect later. A kill is always obeyed: failing closed late is
# safe, trading on late is not.
CONTROL_TTL_S = 60.0


def refusal(c: Control, now_ns: int) -> str:
    """Why a receiver must not act on this command ("" when it must): malformed arguments or too
    old. Never for a kill, whose arguments can only add a flatten (``kill_notes`` says what of
    them was ignored)."""
    if c.command == "kill":
        return ""
    if problems := control_arg_problems(c.command, c.args):
        return "; ".join(problems)
    age_s = (now_ns - c.ts_event) / 1e9
    if age_s > CONTROL_TTL_S:
        return f"expired: issued {age_s:.0f} s ago (only a kill is obeyed after {CONTROL_TTL_S:g} s)"
    return ""


def kill_notes(c: Control) -> str:
    """What of a kill's arguments was ignored (the kill itself never is)."""
    problems = control_arg_problems("kill", c.args)
    return f" (ignored: {'; '.join(problems)})" if problems else ""


def ack_of(
    c: Control,
    service: str,
    now_ns: int,
    accepted: bool,
    summary: str,
    counts: dict[str, float] | None = None,
) -> ControlAck:
    """A service's answer to ``c``."""
    return ControlAck(
        ts_event=now_ns,
        ts_init=now_ns,
        command_id=c.command_id,
        command=c.command,
        service=service,
        accepted=accepted,
        summary=summary,
        counts=counts or {},
    )


def control_arg_problems(command: Command, args: dict[str, str]) -> list[str]:
    """What is wrong with a command's arguments (empty when nothing): checked by every sender
    before anything reaches the bus, and by the receivers again."""
    allowed = {
        "kill": {"flatten"},
        "set_mode": {"mode"},
        "cancel": {"client_order_id"},
        "replace": {"client_order_id", "quantity", "limit_price"},
    }.get(command, set())
    if command == "config":
        return ["config is not a command: live parameters go as a ConfigChange (PUT /api/params/SECTION)"]
    problems = [f"{command} takes no argument {k!r}" for k in sorted(set(args) - allowed)]
    if command == "kill" and args.get("flatten", "false") not in ("true", "false"):
        problems.append(f"flatten must be true or false, not {args['flatten']!r}")
    if command == "set_mode" and args.get("mode") not in MODES:
        problems.append(f"mode must be one of {', '.join(MODES)}, not {args.get('mode')!r}")
    if command in ("cancel", "replace") and not args.get("client_order_id"):
        problems.append(f"{command} needs client_order_id")
    if command == "replace":
        if not {"quantity", "limit_price"} & set(args):
            problems.append("replace needs quantity and/or limit_price")
        problems += [
            f"{k} must be a positive number, not {args[k]!r}"
            for k in ("quantity", "limit_price")
            if k in args and not _positive(args[k])
        ]
    return problems


def _positive(text: str) -> bool:
    try:
        value = float(text)
    except ValueError:
        return False
    return math.isfinite(value) and value > 0


class Progress(msgspec.Struct, frozen=True, kw_only=True):
    """What a service has made of its input so far, carried by its heartbeat so the alerts
    service can tell a silent feed, a features service that makes nothing, or a recorder falling
    behind, without consuming their streams. Each service fills what it knows; the defaults mean
    "not this service's to say"."""

    #: the service's market clock: the latest input's event time (a replay's time, or now live)
    market_ns: int = 0
    #: md-gateway: per subscribed symbol, the market time of its latest record (0: none yet)
    last_record_ns: dict[str, int] = {}
    #: features: the event time of the latest feature vector it emitted (0: none yet)
    last_vector_ns: int = -1
    #: recorder: seconds since it last had everything it received written (0: caught up), and
    #: the rows held meanwhile (memory and spill files)
    lag_s: float = -1.0
    unwritten_rows: int = 0


class Heartbeat(Event, frozen=True, kw_only=True):
    """A service is alive (every ``telemetry.heartbeat_s`` on hb.SERVICE, core NATS). The last
    one of a clean stop says ``stopping``: its silence after that is not an absence."""

    service: str
    instance: int  # when this process started (ns): a restart is a new instance
    seq: int
    stopping: bool = False
    #: which replica of a partitioned service ("0,1/4": partitions 0 and 1 of 4); "" for one
    replica: str = ""
    progress: Progress | None = None


class SyncProbe(Event, frozen=True, kw_only=True):
    """A lockstep replay asks a service whether it is quiet (request/reply on sync.SERVICE)."""

    round: int


class SyncReply(Event, frozen=True, kw_only=True):
    """Quiet: nothing in hand, nothing waiting for it in NATS, its own sends at the server.
    ``handled`` and ``sent`` only grow: two quiet rounds with equal sums mean nothing moved."""

    service: str
    quiet: bool
    handled: int
    sent: int
    detail: str = ""
