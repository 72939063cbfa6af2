"""risk -> execution as processes on a real NATS: an intent becomes an approved, journaled,
filled order; with the risk gate dead nothing trades; an approval the gate did not sign is refused
and dead-lettered; a killed execution restarts from its journal without a duplicate; killed in the
middle of a burst of approvals, it loses none of them."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec

from libs.common import codec, natsauth
from libs.common.bus import Delivery
from libs.common.config import NatsSettings
from libs.common.localinfra import free_port, start_nats
from libs.common.nats_bus import NatsBus
from proto.alerts import Alert, DeadLetter
from proto.base import Event
from proto.control import Control
from proto.execution import Fill, OrderEvent
from proto.orders import OrderApproved, OrderDenied
from services.execution.journal import Journal
from services.risk.core import client_order_id_for
from tests.helpers import http_json, service_env, start_service, wait_until
from tests.kit import stubs

T0 = 1_381_240_800_000_000_000  # 2013-10-08 10:00 New York
MS = 1_000_000


class Desk:
    """The test's own connection: publishes market data and intents, hears everything back."""

    def __init__(self, url: str, seed: Path | None = None) -> None:
        self.bus = NatsBus(NatsSettings(url=url, nkey_seed_file=seed), "test-desk")
        self.seen: list[Event] = []
        self.market = T0

    async def __aenter__(self) -> Desk:
        await self.bus.connect()
        await self.bus.ensure_streams()

        async def hear(d: Delivery) -> None:
            self.seen.append(d.event)

        for pattern in ("order.>", "exec.>", "dlq.>", "alert.>"):
            await self.bus.subscribe(pattern, hear)
        await self.bus.barrier()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.bus.close()

    async def tick(self, n: int = 1, step_ms: int = 20) -> None:
        for _ in range(n):
            self.market += step_ms * MS
            q = stubs.quote(
                ts=self.market, bid=99.99, ask=100.01, bid_size=500, ask_size=500, ts_init=time.time_ns()
            )
            await self.bus.publish("md.quote.IBM", q)
        await self.bus.flush()

    async def intent(self, intent_id: str, qty: float = 100, side: str = "BUY") -> None:
        intent = stubs.intent(
            side=side, quantity=qty, ts=self.market, intent_id=intent_id, ts_init=time.time_ns()
        )
        await self.bus.publish("order.intent.IBM", intent)

    async def until(self, predicate: Any, what: str, timeout: float = 20.0) -> Any:
        """Poll while the market keeps moving: the SimBroker's clock is the market's, so its
        reports come due only as market data arrives."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout}s waiting for {what}")
            await self.tick(1)
            await asyncio.sleep(0.05)
        return predicate()

    def of(self, kind: type, cid: str | None = None) -> list[Any]:
        return [
            e
            for e in self.seen
            if isinstance(e, kind) and (cid is None or getattr(e, "client_order_id", "") == cid)
        ]


def approval(cid: str, valid_s: float = 2.0) -> OrderApproved:
    return stubs.approved(cid, quantity=1, ts=time.time_ns(), valid_ms=valid_s * 1000)


def _start(name: str, nats_url: str, tmp: Path, port: int, **extra: str) -> subprocess.Popen[bytes]:
    env = service_env(
        TRADEFLEET_NATS_URL=nats_url,
        TRADEFLEET_HTTP__PORT=str(port),
        TRADEFLEET_EXECUTION__JOURNAL=str(tmp / "journal.msgpack"),
        TRADEFLEET_EXECUTION__SIM__COMMISSION="ib-fixed",
        **extra,
    )
    proc = start_service(name, env, tmp / f"{name}.log")
    wait_until(lambda: http_json(port, "/readyz")[0] == 200, 60, what=f"{name} ready")
    return proc


@contextlib.contextmanager
def _risk_and_execution(
    tmp: Path, **extra: str
) -> Iterator[tuple[str, dict[str, int], dict[str, subprocess.Popen[bytes]]]]:
    """risk and execution as processes on a NATS of their own; every process (restarted ones
    too: the dict is the caller's to update) stopped at the end."""
    server = start_nats(tmp / "nats")
    ports = {"risk": free_port(), "execution": free_port()}
    procs = {name: _start(name, server.url, tmp, port, **extra) for name, port in ports.items()}
    try:
        yield server.url, ports, procs
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.terminate()
                proc.wait(20)
        server.stop()


async def test_intent_to_fill_then_no_trading_without_the_gate_then_a_clean_restart(tmp_path: Path) -> None:
    # A NATS of its own: the fills and orders it makes must not leak into other tests' streams.
    server = start_nats(tmp_path / "nats")
    nats_url = server.url
    ports = {"risk": free_port(), "execution": free_port()}
    procs = {name: _start(name, nats_url, tmp_path, port) for name, port in ports.items()}
    try:
        async with Desk(nats_url) as desk:
            await desk.tick(3)
            await desk.intent("i-1")
            cid = client_order_id_for("i-1")
            await desk.until(lambda: desk.of(OrderApproved, cid), "approval")
            await desk.until(lambda: desk.of(Fill, cid) and len(desk.of(OrderEvent, cid)) >= 3, "fill")
            statuses = [e.status for e in desk.of(OrderEvent, cid)]
            assert statuses == ["PENDING_SUBMIT", "SUBMITTED", "FILLED"]
            fill = desk.of(Fill, cid)[0]
            assert fill.price == 100.01 and fill.quantity == 100 and fill.commission == 1.0
            assert Journal(tmp_path / "journal.msgpack").read()[0].client_order_id == cid

            # A denial is a typed code with its context.
            await desk.intent("i-huge", qty=10_000)
            (huge,) = await desk.until(
                lambda: [d for d in desk.of(OrderDenied) if d.intent_id == "i-huge"], "denial"
            )
            assert huge.code == "POSITION_SHARES"

            # The risk gate dies: an intent gets no approval, so no order; a stale approval
            # forged or replayed by hand is refused by execution.
            procs["risk"].send_signal(signal.SIGKILL)
            procs["risk"].wait(10)
            await desk.intent("i-2")
            now = time.time_ns()
            await desk.bus.publish(
                "order.approved.IBM",
                stubs.sign(
                    OrderApproved(
                        ts_event=desk.market,
                        ts_init=now - 5_000 * MS,
                        intent_id="i-x",
                        client_order_id="stale-1",
                        symbol="IBM",
                        side="BUY",
                        quantity=100,
                        valid_until_ns=now - 3_000 * MS,
                    )
                ),
            )
            await desk.until(lambda: desk.of(OrderEvent, "stale-1"), "stale approval refused")
            (stale,) = desk.of(OrderEvent, "stale-1")
            assert stale.status == "REJECTED" and "expired" in stale.reason
            assert not desk.of(OrderEvent, client_order_id_for("i-2"))
            journaled = [(r.kind, r.client_order_id) for r in Journal(tmp_path / "journal.msgpack").read()]
            assert journaled == [("send", cid), ("done", cid)]  # nothing else was ever sent; it filled

            # Execution is killed and restarted: its journal says what was sent and how it ended;
            # nothing is sent twice, the redelivered approvals of the stream are recognised, and
            # the filled order is not held open as unresolved.
            procs["execution"].send_signal(signal.SIGKILL)
            procs["execution"].wait(10)
            procs["execution"] = _start("execution", nats_url, tmp_path, ports["execution"])
            await desk.tick(3)
            await asyncio.sleep(0.5)
            app = (http_json(ports["execution"], "/status")[1] or {}).get("app", {})
            assert app["stats"].get("restored", 0) == 0 and app["stats"]["settled_before_restart"] == 1
            assert app["open_orders"] == 0
            assert [r.kind for r in Journal(tmp_path / "journal.msgpack").read()] == ["send", "done"]

            # An operator's kill from a shell (`tradefleet ctl kill`): execution stops trading and
            # says so; the risk gate is not running here, and ctl says that too (exit 1).
            done = await asyncio.to_thread(
                subprocess.run,
                [
                    sys.executable,
                    "-m",
                    "tradefleet",
                    "ctl",
                    "kill",
                    "--nats-url",
                    nats_url,
                    "--issued-by",
                    "t",
                    "--wait",
                    "3",
                ],
                env=service_env(),
                check=False,
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert done.returncode == 1, done.stdout + done.stderr
            answers = done.stdout.splitlines()[1:]
            assert answers[0].startswith("execution: kill done: killed: new approvals refused")
            assert answers[1].startswith("risk: no answer within 3s")

            def killed() -> bool:
                return bool((http_json(ports["execution"], "/status")[1] or {}).get("app", {}).get("killed"))

            wait_until(killed, 20, what="execution killed by the ctl command")
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.terminate()
                proc.wait(20)
        server.stop()


async def test_approvals_the_gate_did_not_sign_are_refused_dead_lettered_and_never_sent(
    tmp_path: Path,
) -> None:
    """The bus here is open (every client may publish anything: the misconfigured bus the
    signature guards against). Forged approvals straight onto order.approved are refused before
    anything else, kept on dlq.execution, alerted; the gate's own approvals still trade."""
    with _risk_and_execution(tmp_path) as (url, ports, _):
        async with Desk(url) as desk:
            await desk.tick(3)
            # A genuine order first: the gate approves, execution fills it.
            await desk.intent("g-1")
            genuine = client_order_id_for("g-1")
            await desk.until(lambda: desk.of(Fill, genuine), "the genuine order filled")
            (signed,) = desk.of(OrderApproved, genuine)
            assert signed.signature

            now = time.time_ns()
            unsigned = stubs.approved("forged-1", ts=now, valid_ms=30_000, signed=False)
            wrong_key = stubs.sign(
                stubs.approved("forged-2", ts=now, valid_ms=30_000, signed=False), key="a-guessed-key"
            )
            # The gate's signature copied onto other terms (a new id, ten times the size).
            copied = msgspec.structs.replace(signed, client_order_id="forged-3", quantity=1_000.0)
            forged = {
                "forged-1": "approval signature missing",
                "forged-2": "approval signature invalid: not signed by the risk gate",
                "forged-3": "approval signature invalid: not signed by the risk gate",
            }
            for approval in (unsigned, wrong_key, copied):
                await desk.bus.publish("order.approved.IBM", approval)
            await desk.bus.flush()

            def letters() -> list[DeadLetter]:
                return [e for e in desk.of(DeadLetter) if e.service == "execution"]

            await desk.until(
                lambda: all(desk.of(OrderEvent, c) for c in forged) and len(letters()) == 3, "refusals"
            )
            for cid, why in forged.items():
                (event,) = desk.of(OrderEvent, cid)
                assert (event.status, event.reason) == ("REJECTED", why)
            # Each kept whole on dlq.execution: the approval as it came, and why.
            kept = {}
            for letter in letters():
                approval = codec.decode(letter.payload)
                assert isinstance(approval, OrderApproved) and letter.subject == "order.approved.IBM"
                kept[approval.client_order_id] = (approval, letter.reason, letter.error)
            assert kept["forged-1"] == (unsigned, "signature_missing", forged["forged-1"])
            assert kept["forged-2"] == (wrong_key, "signature_invalid", forged["forged-2"])
            assert kept["forged-3"] == (copied, "signature_invalid", forged["forged-3"])
            # ... and a critical alert each (one dedupe key: a flood folds into one message).
            await desk.until(
                lambda: len([a for a in desk.of(Alert) if a.dedupe == "approval-signature"]) == 3, "alerts"
            )
            alerts = [a for a in desk.of(Alert) if a.dedupe == "approval-signature"]
            assert {a.severity for a in alerts} == {"critical"}
            assert {a.labels["client_order_id"] for a in alerts} == set(forged)

            # Never sent: the journal holds the genuine order only, and no forged id traded.
            assert [
                r.client_order_id for r in Journal(tmp_path / "journal.msgpack").read() if r.kind == "send"
            ] == [genuine]
            assert not [f for f in desk.of(Fill) if f.client_order_id in forged]
            status = http_json(ports["execution"], "/status")[1] or {}
            stats = status.get("app", {}).get("stats", {})
            assert stats["refused_signature_missing"] == 1 and stats["refused_signature_invalid"] == 2
            assert status["dead_letters"] == 3

            # The gate's approvals still trade after the forgeries.
            await desk.intent("g-2", side="SELL")
            await desk.until(lambda: desk.of(Fill, client_order_id_for("g-2")), "the next genuine fill")


async def test_on_a_secured_bus_an_unsigned_approval_from_a_user_allowed_to_publish_it_is_refused(
    tmp_path: Path,
) -> None:
    """The bus as `tradefleet up` secures it (a user per service, the streams provisioned), and a
    forger holding a seed with rights to publish approvals (here admin's, as a leaked credential
    or a too-broad user would): the permissions let the approval through, the signature does not."""
    auth = tmp_path / "auth"
    seeds = natsauth.write(auth)
    assert {"risk", "execution", "admin"} <= set(seeds)
    server = start_nats(tmp_path / "nats", config=auth / "nats-server.conf")
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        async with Desk(server.url, seed=auth / "admin.nk") as desk:  # admin makes the streams
            for name in ("risk", "execution"):
                seed = {"TRADEFLEET_NATS__NKEY_SEED_FILE": str(auth / f"{name}.nk")}
                procs[name] = _start(name, server.url, tmp_path, free_port(), **seed)
            await desk.tick(3)
            forged = stubs.approved("forged-admin", ts=time.time_ns(), valid_ms=30_000, signed=False)
            await desk.bus.publish("order.approved.IBM", forged)
            await desk.until(lambda: desk.of(OrderEvent, "forged-admin"), "the refusal")
            (event,) = desk.of(OrderEvent, "forged-admin")
            assert (event.status, event.reason) == ("REJECTED", "approval signature missing")
            await desk.until(
                lambda: [e for e in desk.of(DeadLetter) if e.service == "execution"], "the letter"
            )
            (letter,) = [e for e in desk.of(DeadLetter) if e.service == "execution"]
            assert codec.decode(letter.payload) == forged and letter.reason == "signature_missing"
            assert not Journal(tmp_path / "journal.msgpack").read()  # never sent
            # The risk gate's own approval, on the same bus, trades.
            await desk.intent("s-1")
            await desk.until(lambda: desk.of(Fill, client_order_id_for("s-1")), "the genuine fill")
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.terminate()
                proc.wait(20)
        server.stop()


async def test_execution_killed_mid_burst_loses_no_approval_and_sends_none_twice(tmp_path: Path) -> None:
    server = start_nats(tmp_path / "nats")
    port = free_port()
    proc = _start("execution", server.url, tmp_path, port)
    journal = tmp_path / "journal.msgpack"
    cids = [f"burst-{k:03d}" for k in range(300)]
    try:
        async with Desk(server.url) as desk:
            await desk.tick(3)
            for cid in cids:  # a long validity: after the restart they are still fresh
                await desk.bus.publish("order.approved.IBM", approval(cid, valid_s=120))
            await desk.bus.flush()
            # Kill it while it is still journaling the burst (each record is fsynced first).
            await desk.until(lambda: len(desk.of(OrderEvent)) >= 20, "the first orders", timeout=30)
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            sent_before = {r.client_order_id for r in Journal(journal).read()}
            assert 0 < len(sent_before) < len(cids), "the kill should land mid-burst"

            proc = _start("execution", server.url, tmp_path, port)

            def all_journaled() -> bool:
                return {r.client_order_id for r in Journal(journal).read()} >= set(cids)

            await desk.until(all_journaled, "every approval journaled", timeout=60)
            records = [r.client_order_id for r in Journal(journal).read() if r.kind == "send"]
            assert sorted(records) == cids  # each approval sent exactly once: none lost, none twice
            # What was sent before the kill is UNRESOLVED after it (the broker's word is lost
            # with the process), never sent again; what was not, was sent after the restart.
            # (One whose outcome was journaled before the kill, a fill, is settled, not held open.)
            app = (http_json(port, "/status")[1] or {}).get("app", {})
            stats = app["stats"]
            assert stats["restored"] + stats.get("settled_before_restart", 0) == len(sent_before)
            assert stats["sent"] == len(cids) - len(sent_before)
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(20)
        server.stop()


async def test_after_a_slow_restart_unjournaled_approvals_are_refused_not_sent_stale(tmp_path: Path) -> None:
    server = start_nats(tmp_path / "nats")
    port = free_port()
    proc: subprocess.Popen[bytes] | None = None
    try:
        async with Desk(server.url) as desk:
            await desk.tick(3)
            # Nobody is listening yet: the durable consumer is created by the first start, so
            # publish after it exists, kill it before it can act, and come back late.
            proc = _start("execution", server.url, tmp_path, port)
            proc.send_signal(signal.SIGSTOP)  # frozen: it fetches nothing, acts on nothing
            for cid in ("late-1", "late-2"):
                await desk.bus.publish("order.approved.IBM", approval(cid, valid_s=1.0))
            await desk.bus.flush()
            await asyncio.sleep(1.5)  # the approvals expire while it cannot run
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            proc = _start("execution", server.url, tmp_path, port)
            await desk.until(
                lambda: all(desk.of(OrderEvent, c) for c in ("late-1", "late-2")), "late approvals decided"
            )
            for cid in ("late-1", "late-2"):
                (event,) = desk.of(OrderEvent, cid)
                assert event.status == "REJECTED" and "expired" in event.reason
            assert not Journal(tmp_path / "journal.msgpack").read()
    finally:
        if proc is not None and proc.poll() is None:
            proc.terminate()
            proc.wait(20)
        server.stop()


async def test_a_restarted_risk_gate_remembers_positions_and_a_kill(tmp_path: Path) -> None:
    server = start_nats(tmp_path / "nats")
    ports = {"risk": free_port(), "execution": free_port()}
    limits = {"TRADEFLEET_RISK__MAX_POSITION_SHARES": "150"}
    procs = {name: _start(name, server.url, tmp_path, port, **limits) for name, port in ports.items()}

    def restart_risk() -> None:
        procs["risk"].send_signal(signal.SIGKILL)
        procs["risk"].wait(10)
        procs["risk"] = _start("risk", server.url, tmp_path, ports["risk"], **limits)

    try:
        async with Desk(server.url) as desk:
            await desk.tick(3)
            await desk.intent("r-1", qty=100)
            await desk.until(lambda: desk.of(Fill, client_order_id_for("r-1")), "the first fill")
            await asyncio.sleep(0.3)  # the gate has taken the fill and its snapshot
            restart_risk()
            await desk.tick(2)
            await desk.intent("r-2", qty=100)  # 100 held + 100 > 150: only a gate that remembers denies
            (denial,) = await desk.until(
                lambda: [d for d in desk.of(OrderDenied) if d.intent_id == "r-2"], "the second decision"
            )
            assert denial.code == "POSITION_SHARES" and denial.context["would_be"] == "200"

            now = time.time_ns()
            kill = Control(ts_event=now, ts_init=now, command_id=f"k-{now}", command="kill", issued_by="t")
            await desk.bus.publish("ctl.kill", kill)
            await desk.bus.flush()

            def mode() -> str:
                return str((http_json(ports["risk"], "/status")[1] or {}).get("app", {}).get("mode"))

            wait_until(lambda: mode() == "EMERGENCY", 20, what="killed")
            await asyncio.sleep(0.3)  # its risk.state is stored
            restart_risk()
            assert mode() == "EMERGENCY"  # the kill survived the restart
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.terminate()
                proc.wait(20)
        server.stop()


async def test_with_broker_what_if_on_and_no_broker_to_answer_entries_are_denied(tmp_path: Path) -> None:
    server = start_nats(tmp_path / "nats")
    port = free_port()
    proc = _start(
        "risk",
        server.url,
        tmp_path,
        port,
        TRADEFLEET_RISK__BROKER_WHAT_IF="true",
        TRADEFLEET_RISK__WHAT_IF_TIMEOUT_MS="300",
    )
    try:
        async with Desk(server.url) as desk:
            await desk.tick(3)
            await desk.intent("w-1")
            (denial,) = await desk.until(
                lambda: [d for d in desk.of(OrderDenied) if d.intent_id == "w-1"], "denial"
            )
            assert denial.code == "MARGIN_UNKNOWN"  # fail closed: no what-if answer, no order
    finally:
        proc.terminate()
        proc.wait(20)
        server.stop()


async def test_the_panic_file_kills_cancels_flattens_and_puts_the_gate_in_emergency(tmp_path: Path) -> None:
    """Touching the panic file does what ctl.kill does, and flattens (seed 003): the gateway acts
    at once on its own, and tells the risk gate over the bus."""
    panic = tmp_path / "PANIC"
    with _risk_and_execution(tmp_path, TRADEFLEET_EXECUTION__PANIC_FILE=str(panic)) as (url, ports, _):
        async with Desk(url) as desk:
            await desk.tick(3)
            await desk.intent("p-1", qty=100)
            held = client_order_id_for("p-1")
            await desk.until(lambda: desk.of(Fill, held), "a position")
            now = time.time_ns()
            resting = stubs.approved(
                "rest-1", quantity=50, ts=now, order_type="LMT", limit_price=90.0, valid_ms=5_000
            )
            await desk.bus.publish("order.approved.IBM", resting)
            await desk.until(
                lambda: [e for e in desk.of(OrderEvent, "rest-1") if e.status == "SUBMITTED"], "resting"
            )

            panic.touch()
            await desk.until(
                lambda: [e for e in desk.of(OrderEvent, "rest-1") if e.status == "CANCELLED"], "cancelled"
            )
            flatten = await desk.until(
                lambda: [f for f in desk.of(Fill) if f.client_order_id.startswith("flat-panic-")], "flattened"
            )
            assert flatten[0].side == "SELL" and sum(f.quantity for f in flatten) == 100

            def app(name: str) -> dict[str, Any]:
                return dict((http_json(ports[name], "/status")[1] or {}).get("app", {}))

            wait_until(lambda: app("risk").get("mode") == "EMERGENCY", 20, what="the gate in EMERGENCY")
            assert app("risk")["mode_reason"].startswith("kill by panic-file:")
            execution = app("execution")
            assert execution["killed"] and execution["positions"] == {}
            # it heard its own kill back on the bus and did not flatten twice
            assert execution["stats"]["control_duplicate"] == 1 and execution["stats"]["control_kill"] == 1


async def test_a_gate_restarted_after_the_daily_loss_limit_keeps_denying_entries(tmp_path: Path) -> None:
    limits = {"TRADEFLEET_RISK__DAILY_LOSS_LIMIT": "3"}  # one round trip at the touch loses 4
    with _risk_and_execution(tmp_path, **limits) as (url, ports, procs):
        async with Desk(url) as desk:
            await desk.tick(3)
            await desk.intent("d-1", qty=100)
            await desk.until(lambda: desk.of(Fill, client_order_id_for("d-1")), "bought")
            await desk.intent("d-2", qty=100, side="SELL")
            await desk.until(lambda: desk.of(Fill, client_order_id_for("d-2")), "sold at a loss")

            async def decision(intent_id: str) -> OrderDenied:
                await desk.intent(intent_id, qty=10)
                found = await desk.until(
                    lambda: [d for d in desk.of(OrderDenied) if d.intent_id == intent_id], intent_id
                )
                return found[0]  # type: ignore[no-any-return]

            assert (await decision("d-3")).code == "LOSS_DAILY_LIMIT"
            await asyncio.sleep(0.3)  # its state and the execution's snapshot are stored
            procs["risk"].send_signal(signal.SIGKILL)
            procs["risk"].wait(10)
            procs["risk"] = _start("risk", url, tmp_path, ports["risk"], **limits)
            await desk.tick(2)  # a fresh gate has seen no quote yet
            assert (await decision("d-4")).code == "LOSS_DAILY_LIMIT"  # the day's loss survived
