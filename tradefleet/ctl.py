"""`tradefleet ctl`: send an operator command and report what the fleet did about it.

The command goes on JetStream (ctl.COMMAND, stored in CONTROL); the services that act on it
answer on ack.SERVICE (proto.control.RESPONDERS says which). The sender listens before it
publishes, so no answer can be missed, and waits a bounded time for each responder: silence is
reported as silence, never as success.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

import nats.errors
import nats.js.errors
from nats.aio.msg import Msg

from libs.common import codec
from libs.common.nats_bus import SCHEMA_HEADER
from proto import SCHEMA_VERSION
from proto.control import CONTROL_TTL_S, RESPONDERS, Control, ControlAck
from proto.subjects import subject_of
from tradefleet.reach import Target, Unreachable, connect


@dataclass
class Answers:
    acks: dict[str, ControlAck] = field(default_factory=dict)
    silent: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.silent and all(a.accepted for a in self.acks.values())

    def lines(self, wait_s: float) -> list[str]:
        out = []
        for service, ack in sorted(self.acks.items()):
            verdict = "done" if ack.accepted else "REFUSED"
            out.append(f"{service}: {ack.command} {verdict}: {ack.summary}")
        out += [
            f"{s}: no answer within {wait_s:g}s: not running, or not on this bus? The command is stored; "
            f"read later, it is acted on only within {CONTROL_TTL_S:g}s of sending (a kill always)"
            for s in self.silent
        ]
        return out


async def send(target: Target, command: Control, wait_s: float) -> Answers:
    nc = await connect(target, "tradefleet-ctl", user="operator")
    expected = set(RESPONDERS[command.command])
    answers = Answers()
    all_in = asyncio.Event()

    async def on_ack(msg: Msg) -> None:
        with contextlib.suppress(codec.DecodeFailure):
            ack = codec.decode(msg.data)
            if isinstance(ack, ControlAck) and ack.command_id == command.command_id:
                answers.acks[ack.service] = ack
                if expected <= set(answers.acks):
                    all_in.set()

    try:
        await nc.subscribe("ack.*", cb=on_ack)
        await _publish(nc, target, command)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(all_in.wait(), wait_s)
    finally:
        with contextlib.suppress(Exception):
            await nc.close()
    answers.silent = sorted(expected - set(answers.acks))
    return answers


async def _publish(nc: nats.NATS, target: Target, command: Control) -> None:
    headers = {SCHEMA_HEADER: str(SCHEMA_VERSION), "Nats-Msg-Id": command.dedupe_key()}
    try:
        await nc.jetstream(timeout=3.0).publish(
            subject_of(command), codec.encode(command), stream="CONTROL", headers=headers
        )
    except nats.js.errors.NoStreamResponseError:
        raise Unreachable(
            f"no fleet on {target.url} ({target.source}): nothing there stores ctl.* (no CONTROL stream)"
        ) from None
    except (nats.errors.TimeoutError, nats.js.errors.Error) as exc:
        raise Unreachable(f"{target.url} did not store the command: {exc!r}") from None
