"""The recorder loses no durable event and duplicates none: killed mid-stream, crashed between
commit and ack, or cut off from its database."""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from pathlib import Path
from urllib.parse import urlparse

import psycopg

from libs.common.config import DbSettings, load_settings
from libs.common.localinfra import free_port, start_nats
from libs.common.nats_bus import NatsBus
from libs.common.runtime import Runtime
from libs.common.storage.migrate import migrate
from proto.execution import Fill
from proto.market import Quote
from services.recorder.runtime import FAULT_EXIT_AFTER_COMMIT, RecorderApp, SpillStore
from tests.helpers import TcpProxy, await_until, http_json, service_env, start_service, wait_until
from tests.kit import stubs
from tests.kit.samples import T0


def _fill(run: str, i: int) -> Fill:
    return stubs.fill(
        ts=T0 + i, exec_id=f"{run}-{i}", client_order_id=f"{run}-c", quantity=1, price=182.0 + i / 1000
    )


def _fill_counts(dsn: str, run: str) -> tuple[int, int]:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT count(*), count(DISTINCT exec_id) FROM fills WHERE client_order_id = %s", (f"{run}-c",)
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def _quote_counts(dsn: str, symbol: str) -> tuple[int, int]:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT count(*), count(DISTINCT bid_size) FROM quotes WHERE symbol = %s", (symbol,)
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


async def _counts(dsn: str, run: str) -> tuple[int, int]:
    """Off the event loop: a blocking query there could wait on a lock held by a transaction
    that needs the loop (the test's TCP proxy runs on it)."""
    return await asyncio.to_thread(_fill_counts, dsn, run)


async def _at_least(dsn: str, run: str, n: int) -> bool:
    return (await _counts(dsn, run))[0] >= n


async def _publisher(nats_url: str) -> NatsBus:
    bus = NatsBus(load_settings(None, nats={"url": nats_url}).nats, "test-publisher")
    await bus.connect()
    await bus.ensure_streams()
    return bus


def _recorder_env(nats_url: str, dsn: str, tmp: Path, **extra: str) -> tuple[dict[str, str], int]:
    port = free_port()
    env = service_env(
        TRADEFLEET_NATS_URL=nats_url,
        TRADEFLEET_DB_URL=dsn,
        TRADEFLEET_HTTP__PORT=str(port),
        TRADEFLEET_RECORDER__SPILL_DIR=str(tmp / "spill"),
        TRADEFLEET_RECORDER__BATCH_ROWS="50",
        TRADEFLEET_RECORDER__FLUSH_INTERVAL_MS="20",
        **extra,
    )
    return env, port


def _ready(port: int) -> bool:
    return http_json(port, "/readyz")[0] == 200


async def test_kill_mid_stream_then_restart_loses_and_duplicates_nothing(
    nats_url: str, pg_dsn: str, tmp_path: Path
) -> None:
    migrate(pg_dsn, DbSettings())
    run, total = uuid.uuid4().hex[:8], 3000
    env, port = _recorder_env(nats_url, pg_dsn, tmp_path)
    proc = start_service("recorder", env, tmp_path / "recorder.log")
    await asyncio.to_thread(wait_until, lambda: _ready(port), 30, what="recorder ready")
    bus = await _publisher(nats_url)
    for i in range(total // 2):
        await bus.publish("exec.fill.IBM", _fill(run, i))
    # Kill -9 while it is mid-stream: some batches committed, some in flight, some unread.
    await await_until(lambda: _at_least(pg_dsn, run, 1), what="first rows committed")
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    for i in range(total // 2, total):
        await bus.publish("exec.fill.IBM", _fill(run, i))
    proc = start_service("recorder", env, tmp_path / "recorder.log")
    await await_until(lambda: _at_least(pg_dsn, run, total), timeout=60, what="all fills stored")
    await asyncio.sleep(0.5)  # any duplicate would land by now: batches flush every 20 ms
    assert await _counts(pg_dsn, run) == (total, total)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0
    await bus.close()


async def test_crash_between_commit_and_ack_is_not_a_duplicate(pg_dsn: str, tmp_path: Path) -> None:
    # A NATS of its own: on the shared one the first batch committed may hold other tests'
    # stored events (commands, alerts) instead of this test's fills.
    server = start_nats(tmp_path / "nats")
    try:
        await _crash_between_commit_and_ack(server.url, pg_dsn, tmp_path)
    finally:
        server.stop()


async def _crash_between_commit_and_ack(nats_url: str, pg_dsn: str, tmp_path: Path) -> None:
    migrate(pg_dsn, DbSettings())
    run, total = uuid.uuid4().hex[:8], 200
    env, port = _recorder_env(nats_url, pg_dsn, tmp_path)
    bus = await _publisher(nats_url)
    crashing = start_service("recorder", {**env, FAULT_EXIT_AFTER_COMMIT: "1"}, tmp_path / "crash.log")
    for i in range(total):
        await bus.publish("exec.fill.IBM", _fill(run, i))
    assert await asyncio.to_thread(crashing.wait, 30) == 3  # exited right after a commit, before acking
    with psycopg.connect(pg_dsn) as conn:  # this fresh database replays the stream from its start
        committed_before_restart = conn.execute("SELECT count(*) FROM fills").fetchone()[0]  # type: ignore[index]
    assert committed_before_restart > 0
    proc = start_service("recorder", env, tmp_path / "recorder.log")
    # Ready first: the crashed batch may have held every fill, and a SIGTERM before the restarted
    # recorder has its handlers would end it with -15.
    await asyncio.to_thread(wait_until, lambda: _ready(port), 60, what="the restarted recorder ready")
    await await_until(lambda: _at_least(pg_dsn, run, total), timeout=60, what="all fills stored")
    await asyncio.sleep(0.5)
    with psycopg.connect(pg_dsn) as conn:  # the committed-but-unacked batch was not written twice
        everything = conn.execute("SELECT count(*), count(DISTINCT exec_id) FROM fills").fetchone()
    assert everything is not None and everything[0] == everything[1]
    await asyncio.sleep(0.5)
    assert await _counts(pg_dsn, run) == (total, total)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0
    await bus.close()


async def test_database_outage_buffers_spills_and_catches_up(
    nats_url: str, pg_dsn: str, tmp_path: Path
) -> None:
    migrate(pg_dsn, DbSettings())
    target = urlparse(pg_dsn)
    proxy = TcpProxy(target.hostname or "127.0.0.1", target.port or 5432)
    await proxy.start()
    via_proxy = target._replace(netloc=f"{target.username}@127.0.0.1:{proxy.port}").geturl()
    settings = load_settings(
        None,
        nats={"url": nats_url},
        db={"url": via_proxy, "connect_timeout_s": 1},
        recorder={
            "flush_interval_ms": 20,
            "batch_rows": 100,
            "buffer_max_rows": 300,
            "max_durable_pending": 100,
            "spill_dir": str(tmp_path / "spill"),
        },
        http={"port": -1},
    )
    app = RecorderApp(settings, via_proxy)
    rt = Runtime("recorder", settings)
    task = asyncio.create_task(rt.run(app, install_signals=False))
    try:
        await await_until(lambda: rt.ready, what="recorder ready")
        bus = await _publisher(nats_url)
        run = uuid.uuid4().hex[:8]
        sym = f"Q{run[:4].upper()}"

        proxy.cut()
        for i in range(1000):
            await bus.publish(
                f"md.quote.{sym}",
                Quote(
                    ts_event=T0 + i,
                    ts_init=T0 + i,
                    symbol=sym,
                    bid=10.0,
                    ask=10.01,
                    bid_size=i + 1,
                    ask_size=1,
                ),
            )
        for i in range(300):
            await bus.publish("exec.fill.IBM", _fill(run, i))
        await bus.flush()
        await await_until(lambda: not app.db_up and app.spill.files(), what="outage noticed and rows spilled")
        assert app.core is not None and app.core.memory_core_rows() <= 300 + 100
        assert await _counts(pg_dsn, run) == (0, 0)

        proxy.restore()
        await await_until(lambda: _at_least(pg_dsn, run, 300), timeout=60, what="fills after outage")
        await await_until(lambda: not app.spill.files(), what="spill written back")
        assert await asyncio.to_thread(_quote_counts, pg_dsn, sym) == (1000, 1000)
        assert await _counts(pg_dsn, run) == (300, 300)
        assert app.outages == 1 and app.core.stats["rows_spilled"] > 0
        rt.request_stop()
        assert await asyncio.wait_for(task, 20) == 0
        await bus.close()
    finally:
        proxy.restore()
        rt.request_stop()
        await asyncio.wait_for(asyncio.shield(task), 30)
        await proxy.stop()
    assert os.listdir(tmp_path / "spill") == []


def _spilled_quotes(spill_dir: Path) -> int:
    store = SpillStore(spill_dir)
    return sum(len(store.read(path).get("quotes", [])) for path in store.files())


async def test_killed_during_a_database_outage_it_loses_no_market_data(
    nats_url: str, pg_dsn: str, tmp_path: Path
) -> None:
    """The database down and the recorder killed -9 meanwhile: the market data it had taken was
    already on disk (spilled as soon as the database was gone, well under the memory bound), the
    durable events still in JetStream; restarted with the database back, everything is stored
    once."""
    migrate(pg_dsn, DbSettings())
    target = urlparse(pg_dsn)
    proxy = TcpProxy(target.hostname or "127.0.0.1", target.port or 5432)
    await proxy.start()
    via_proxy = target._replace(netloc=f"{target.username}@127.0.0.1:{proxy.port}").geturl()
    env, port = _recorder_env(nats_url, via_proxy, tmp_path, TRADEFLEET_DB__CONNECT_TIMEOUT_S="1")
    proc = start_service("recorder", env, tmp_path / "recorder.log")
    try:
        await asyncio.to_thread(wait_until, lambda: _ready(port), 30, what="recorder ready")
        bus = await _publisher(nats_url)
        run = uuid.uuid4().hex[:8]
        sym = f"K{run[:4].upper()}"
        proxy.cut()
        for i in range(1000):
            quote = Quote(
                ts_event=T0 + i, ts_init=T0 + i, symbol=sym, bid=10.0, ask=10.01, bid_size=i + 1, ask_size=1
            )
            await bus.publish(f"md.quote.{sym}", quote)
        for i in range(300):
            await bus.publish("exec.fill.IBM", _fill(run, i))
        await bus.flush()
        # The default memory bound (buffer_max_rows) is far above 1000 rows: only the outage spills.
        await await_until(
            lambda: asyncio.to_thread(lambda: _spilled_quotes(tmp_path / "spill") == 1000),
            timeout=30,
            what="every quote on disk",
        )
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        proxy.restore()
        proc = start_service("recorder", env, tmp_path / "recorder.log")
        await await_until(lambda: _at_least(pg_dsn, run, 300), timeout=60, what="fills after the outage")
        await await_until(
            lambda: asyncio.to_thread(lambda: _quote_counts(pg_dsn, sym)[0] >= 1000),
            timeout=60,
            what="quotes",
        )
        await asyncio.sleep(0.5)  # a duplicate would land by now
        assert await asyncio.to_thread(_quote_counts, pg_dsn, sym) == (1000, 1000)
        assert await _counts(pg_dsn, run) == (300, 300)
        assert _spilled_quotes(tmp_path / "spill") == 0
        await bus.close()
    finally:
        proxy.restore()
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
        await proxy.stop()
