"""recorder runtime: subscribe, hand events to the core, write batches in a worker thread.

The database write runs in a thread (psycopg's binary COPY formats rows in C, so the event loop
keeps receiving while a batch is written).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import sys
import time
from pathlib import Path
from typing import Any

from libs.common import codec
from libs.common.bus import Delivery
from libs.common.config import Settings
from libs.common.logging import get_logger
from libs.common.nats_bus import routable
from libs.common.runtime import Runtime, ServiceApp
from libs.common.storage.writer import BatchWriter, StorageUnavailable
from proto.base import Event
from proto.control import Progress
from proto.market import LAST_SEQ_PREFIX, FeedStatus, GapRequest
from proto.subjects import UnknownSubject, stream_of_pattern, subject_of, subject_token
from services.recorder.core import (
    RecorderCore,
    build_rows,
    core_patterns,
    days_of,
    durable_patterns,
    rows_of,
    table_of,
)
from services.recorder.sequence import TickSequencer, keep_new_ticks

log = get_logger(__name__)
CONSUMER = "recorder"
# Test-only fault point: exit right after a commit, before acking, to prove no duplicates.
FAULT_EXIT_AFTER_COMMIT = "TRADEFLEET_FAULT_RECORDER_EXIT_AFTER_COMMIT"
GAP_ASK_EVERY_S = 2.0  # between two requests for the same missing ticks
GAP_ASKS = 10  # requests for one hole before it is left as lost (and counted so)
GAP_REQUESTS_PER_ROUND = 100
TAIL_GRACE_S = 1.0  # after a replay's end, before its last numbers count as expected


class SpillStore:
    """Spilled core events as msgpack files (the wire codec), written and read oldest first."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._seq = 0

    def files(self) -> list[Path]:
        return sorted(self.directory.glob("spill-*.msgpack")) if self.directory.exists() else []

    def write(self, events_by_table: dict[str, list[Event]]) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._seq += 1
        path = self.directory / f"spill-{time.time_ns():020d}-{self._seq:06d}.msgpack"
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(codec.encode_batch([e for events in events_by_table.values() for e in events]))
        os.replace(tmp, path)  # atomic: a crash never leaves half a spill file
        return path

    @staticmethod
    def read(path: Path) -> dict[str, list[Event]]:
        batch = codec.decode(path.read_bytes())
        out: dict[str, list[Event]] = {}
        for event in getattr(batch, "events", [batch]):
            table = table_of(event)
            if table is not None:
                out.setdefault(table, []).append(event)
        return out


def _subject(event: Event) -> str:
    try:
        return subject_of(event)
    except UnknownSubject:
        return f"(a {type(event).__name__})"


class RecorderApp(ServiceApp):
    name = "recorder"

    def __init__(self, settings: Settings, dsn: str) -> None:
        super().__init__()
        self.settings = settings
        # The configured subjects plus the audit trail's (refused here, at start, if they clash).
        self.core_subjects = core_patterns(settings.recorder.core_subjects)
        self.durable_subjects = durable_patterns(settings.recorder.durable_subjects)
        self.writer = BatchWriter(dsn, settings.db.connect_timeout_s)
        self.spill = SpillStore(settings.recorder.spill_dir)
        self.core: RecorderCore | None = None
        self._wake = asyncio.Event()
        self._room = asyncio.Event()
        self._stopping = False
        self._stop_deadline = 0.0
        self._flusher: asyncio.Task[None] | None = None
        self._durable_starter: asyncio.Task[None] | None = None
        self.db_up = True
        self.outages = 0
        self.caught_up_at = time.monotonic()  # when it last had everything it received written
        # The market-data numbers the database holds (services/recorder/sequence.py): loaded
        # with the first write, then moved by each committed batch.
        self.sequencer: TickSequencer | None = None
        self.ticks_left_out: dict[str, int] = {}  # held already, so not written again
        self.asked: dict[tuple[str, int, int, int], tuple[int, float]] = {}  # hole -> asks, when
        self.gap_requests = 0
        self.expected: list[tuple[float, dict[str, int]]] = []  # (due at, symbol -> last seq)

    async def start(self, rt: Runtime) -> None:
        cfg = self.settings.recorder
        self.rt = rt
        # The writer thread releases the GIL on every socket send and then waits for the event
        # loop's thread to hand it back, by default after up to 5 ms: the server idles meanwhile.
        # A short switch interval keeps COPY fed (bench/recorder.py measures the difference).
        sys.setswitchinterval(cfg.gil_switch_interval_s)
        self.core = RecorderCore(
            rt.clock,
            cfg.batch_rows,
            cfg.flush_interval_ms * 1_000_000,
            cfg.buffer_max_rows,
            cfg.max_durable_pending,
        )
        for pattern in self.core_subjects:
            await rt.subscribe(pattern, self._on_core)
        # Ticks sent again to fill a hole, and the feed's end (its last number per symbol).
        await rt.subscribe("gap.fill.*", self._on_core)
        await rt.subscribe("md.status", self._on_feed, types=FeedStatus)
        last_feed = await rt.last("md.status", FeedStatus)
        if last_feed is not None:
            self._note_the_end(last_feed[0], due=time.monotonic())
        self._flusher = asyncio.create_task(self._flush_loop(), name="recorder-flush")
        # Durable consumers start once the committed offsets are known (the DB may be down now).
        self._durable_starter = asyncio.create_task(self._start_durable(), name="recorder-durable")

    async def _start_durable(self) -> None:
        assert self.core is not None
        delay = 0.2
        while True:
            try:
                self.core.watermarks.update(await asyncio.to_thread(self.writer.load_offsets, CONSUMER))
                break
            except StorageUnavailable as exc:
                log.warning("database unavailable; durable consumers wait", error=str(exc)[:200])
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        for pattern in self.durable_subjects:
            stream = stream_of_pattern(pattern)
            assert stream is not None  # RecorderSettings validates durable_subjects
            # The database owns the position: resume right after the last committed sequence.
            await self.rt.subscribe(
                pattern,
                self._on_durable,
                durable=f"recorder-{stream}",
                manual_ack=True,
                start_seq=self.core.watermarks.get(stream, 0) + 1,
            )

    async def _on_core(self, d: Delivery) -> None:
        assert self.core is not None
        self.core.add(d.event)
        if self.core.pending.n_core >= self.core.batch_rows:
            self._wake.set()

    async def _on_feed(self, d: Delivery[FeedStatus]) -> None:
        self._note_the_end(d.event, due=time.monotonic() + TAIL_GRACE_S)

    def _note_the_end(self, status: FeedStatus, due: float) -> None:
        """A finished replay says its last number per symbol: a tail that never came is a hole.
        Applied a moment later, once the last batch before it is written."""
        if status.state != "replay_finished":
            return
        n = len(LAST_SEQ_PREFIX)
        last = {k[n:]: v for k, v in status.counters.items() if k.startswith(LAST_SEQ_PREFIX)}
        if last:
            self.expected.append((due, last))

    async def _on_durable(self, d: Delivery) -> None:
        assert self.core is not None and d.stream is not None
        if self.core.already_committed(d.stream, d.seq):
            self.core.stats["duplicates_skipped"] += 1
            await d.ack()
            return
        if self.core.already_held(d.stream, d.seq):
            self.core.stats["redeliveries_held"] += 1
            return  # acked with the original once its batch commits
        while not self.core.room_for_durable():
            # Backpressure: stop pulling; JetStream keeps the rest until the database is back.
            self._room.clear()
            self._wake.set()
            await self._room.wait()
        self.core.add(d.event, d, d.stream, d.seq)
        if self.core.due():
            self._wake.set()

    async def _flush_loop(self) -> None:
        """Cut batches and write them; on an outage keep cutting and spilling at every wake-up
        (memory stays within buffer_max_rows + batch_rows) and retry the database with backoff."""
        assert self.core is not None
        interval = self.settings.recorder.flush_interval_ms / 1000
        backoff = 0.2
        retry_at = 0.0
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=interval)
            self._wake.clear()
            # A wake-up means a full batch, an interval gone by, or a stop: write what is pending.
            self.core.cut()
            if not self.db_up and time.monotonic() < retry_at and not self._stopping:
                await self._spill_overflow(everything=True)
                continue
            try:
                ok = await self._write_all()
            except Exception as exc:  # never the end of the flush loop: say so, retry with backoff
                self.core.stats["write_errors"] += 1
                log.exception("writing failed; retrying", error=repr(exc)[:300])
                ok = False
            if ok:
                await self._ask_for_holes()
                self.caught_up_at = time.monotonic()
                backoff = 0.2
                self._room.set()
            else:
                await self._spill_overflow(everything=True)
                retry_at = time.monotonic() + backoff
                backoff = min(backoff * 2, 5.0)
            if self._stopping:
                everything_written = ok and self.core.pending.empty and not self.core.backlog
                if everything_written or (not ok and time.monotonic() > self._stop_deadline):
                    return

    async def _spill_overflow(self, everything: bool = False) -> None:
        """With the database down, every cut batch's market data goes to disk at once (it is
        nowhere else: core NATS keeps nothing); durable events stay unacked in JetStream."""
        assert self.core is not None
        for events in self.core.overflow(0 if everything else None):
            path = await asyncio.to_thread(self.spill.write, events)
            log.warning("database down: market data spilled to disk", file=str(path))

    async def _write_all(self) -> bool:
        """Spill files first (oldest data), then the in-memory backlog. False on a DB outage."""
        assert self.core is not None
        try:
            for path in self.spill.files():
                events = await asyncio.to_thread(self.spill.read, path)
                left_out = await self._write_batch(events, {})
                path.unlink()
                self.core.committed_spill(events)
                self.core.committed_rows.subtract(left_out)
            while self.core.backlog:
                batch = self.core.backlog[0]
                left_out = await self._write_batch(batch.events(), batch.offsets)
                if batch.acks and os.environ.get(FAULT_EXIT_AFTER_COMMIT):
                    log.error("fault injection: exiting after commit, before ack")
                    os._exit(3)
                self.core.backlog.popleft()
                self.core.committed(batch)
                self.core.committed_rows.subtract(left_out)
                for delivery in batch.acks:
                    await delivery.ack()
            if self.expected and self.expected[0][0] <= time.monotonic():
                await asyncio.to_thread(self._write, {}, {})  # the expected tails, stored
        except StorageUnavailable as exc:
            if self.db_up:
                self.outages += 1
                log.error(
                    "database unavailable: buffering",
                    error=str(exc)[:300],
                    buffered_rows=self.core.pending_rows(),
                )
            self.db_up = False
            return False
        if not self.db_up:
            log.info("database back: buffer written")
        self.db_up = True
        return True

    async def _write_batch(self, events: dict[str, list[Event]], offsets: dict[str, int]) -> dict[str, int]:
        """Write a batch; one the database refuses (a value beyond its types: an integer past
        bigint, a NUL in a string) is written again row by row in one transaction, and what it
        still refuses is dead-lettered (counted, kept in the DLQ stream): the rest is stored and
        the recorder carries on. An outage (StorageUnavailable) is the caller's."""
        try:
            return await asyncio.to_thread(self._write, events, offsets)
        except StorageUnavailable:
            raise
        except Exception as exc:
            log.error("the database refused a batch: finding the rows it refuses", error=repr(exc)[:300])
        left_out, refused = await asyncio.to_thread(self._write_isolating, events, offsets)
        assert self.core is not None
        for event, why in refused:
            self.core.stats["rows_refused_by_database"] += 1
            await self.rt.on_dropped(_subject(event), "refused_by_database", why, codec.encode(event), None)
        return left_out

    def _write_isolating(
        self, events_by_table: dict[str, list[Event]], offsets: dict[str, int]
    ) -> tuple[dict[str, int], list[tuple[Event, str]]]:
        """``_write`` one row at a time (BatchWriter.write_isolating): (left out as held already,
        (event, why) of each refused)."""
        trial, events_by_table, left_out = self._trial(events_by_table)
        rows: dict[str, list[Any]] = {}
        owner: dict[str, list[Event]] = {}
        refused: list[tuple[Event, str]] = []
        for table, events in events_by_table.items():
            for event in events:
                try:
                    built = build_rows(event)
                except (ValueError, TypeError, OverflowError) as exc:
                    refused.append((event, f"{type(exc).__name__}: {exc}"[:500]))
                    continue
                rows.setdefault(table, []).extend(built)
                owner.setdefault(table, []).extend([event] * len(built))
        at_db = self.writer.write_isolating(rows, offsets, CONSUMER, trial.take_changed())
        self.sequencer = trial
        refused += [(owner[table][i], why) for table, i, why in at_db]
        for table, n in left_out.items():
            self.ticks_left_out[table] = self.ticks_left_out.get(table, 0) + n
        return left_out, refused

    def _trial(
        self, events_by_table: dict[str, list[Event]]
    ) -> tuple[TickSequencer, dict[str, list[Event]], collections.Counter[str]]:
        """A copy of the numbers held (loaded with the first write) moved by the tails now
        expected and by this batch's ticks, the batch without the ticks held already, and how
        many those were per table. Adopted only once the batch commits."""
        if self.sequencer is None:
            self.sequencer = TickSequencer(self.writer.load_sequences(CONSUMER))
        trial = self.sequencer.copy()
        now = time.monotonic()
        while self.expected and self.expected[0][0] <= now:
            for symbol, seq in self.expected.pop(0)[1].items():
                trial.expect(symbol, seq)
        kept, left_out = keep_new_ticks(trial, events_by_table)
        return trial, kept, left_out

    def _write(self, events_by_table: dict[str, list[Event]], offsets: dict[str, int]) -> dict[str, int]:
        """In the writer thread: rows are built inside the COPY loop (see core.rows_of). Ticks
        held already are left out, and the numbers held are stored with the rows (a failed
        write leaves the state as it was). Returns how many were left out per table."""
        trial, events_by_table, left_out = self._trial(events_by_table)
        rows = {table: rows_of(events) for table, events in events_by_table.items()}
        days = {table: days_of(events) for table, events in events_by_table.items()}
        self.writer.write(rows, offsets, CONSUMER, days, trial.take_changed())
        self.sequencer = trial
        for table, n in left_out.items():
            self.ticks_left_out[table] = self.ticks_left_out.get(table, 0) + n
        return left_out

    async def _ask_for_holes(self) -> None:
        """Ask the source for the ticks the database misses (it sends them on gap.fill.SYMBOL),
        each hole every GAP_ASK_EVERY_S at most, GAP_ASKS times at most."""
        if self.sequencer is None:
            return
        now = time.monotonic()
        holes = self.sequencer.holes()
        sent = 0
        for hole in holes:
            asks, at = self.asked.get(hole, (0, 0.0))
            if asks >= GAP_ASKS or now - at < GAP_ASK_EVERY_S or sent >= GAP_REQUESTS_PER_ROUND:
                continue
            symbol, session, first, last = hole
            subject = f"gap.request.{subject_token(symbol)}"
            if not routable(subject):  # a symbol NATS cannot carry came from no real source
                self.asked[hole] = (GAP_ASKS, now)
                continue
            ts = self.rt.now_ns()
            request = GapRequest(
                ts_event=ts,
                ts_init=ts,
                symbol=symbol,
                session=session,
                first=first,
                last=last,
                requester=CONSUMER,
            )
            await self.rt.publish(subject, request)
            self.asked[hole] = (asks + 1, now)
            self.gap_requests += 1
            sent += 1
            if not asks:
                log.warning("ticks missing: asked of the source", symbol=symbol, first=first, last=last)
        if len(self.asked) > 10 * len(holes) + 1000:  # forget the holes filled since
            still = set(holes)
            self.asked = {h: v for h, v in self.asked.items() if h in still}

    async def stop(self) -> None:
        """Write what is buffered (bounded wait); what cannot be written is spilled, never dropped."""
        assert self.core is not None
        self._stopping = True
        self._stop_deadline = time.monotonic() + 10.0
        if self._durable_starter is not None:
            self._durable_starter.cancel()
        self._wake.set()
        if self._flusher is not None:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(self._flusher, timeout=15.0)
        self.core.cut()
        unwritten = [b for b in self.core.backlog if not b.empty]
        for batch in unwritten:
            if batch.n_core:
                self.spill.write(batch.take_core())
        if unwritten:
            log.warning(
                "stopped with the database down: market data spilled to disk, durable events left "
                "unacked in JetStream",
                spill_files=len(self.spill.files()),
            )
        self.writer.close()

    def progress(self) -> Progress | None:
        """How far behind storage is: the alerts service says so when it keeps growing."""
        if self.core is None:
            return None
        lag = time.monotonic() - self.caught_up_at
        return Progress(lag_s=round(lag, 3), unwritten_rows=self.core.pending_rows())

    def status(self) -> dict[str, Any]:
        core = self.core
        if core is None:
            return {}
        return {
            "rows_stored": dict(core.committed_rows),
            "pending_rows": core.pending_rows(),
            "db_up": self.db_up,
            "outages": self.outages,
            "spill_files": len(self.spill.files()),
            "ignored": dict(core.ignored),
            "sequence": self.sequence_status(),
            **dict(core.stats),
        }

    def sequence_status(self) -> dict[str, Any]:
        """What the numbering says: holes seen, ticks still missing, duplicates not written."""
        seqr = self.sequencer
        stats = dict(seqr.stats) if seqr is not None else {}
        holes = seqr.holes() if seqr is not None else []
        given_up = [h for h in holes if self.asked.get(h, (0, 0.0))[0] >= GAP_ASKS]
        ticks_given_up = sum(last - first + 1 for _, _, first, last in given_up)
        return {
            "loaded": seqr is not None,
            "holes_opened": stats.get("gaps", 0),
            "ticks_missed": stats.get("gap_ticks", 0),
            # still asked for; then given up on (the source could not send them: lost)
            "ticks_missing_now": (seqr.missing() if seqr is not None else 0) - ticks_given_up,
            "ticks_given_up": ticks_given_up,
            # holes of sessions not heard from since this process began (an earlier run's)
            "ticks_missing_earlier_sessions": (seqr.missing(False) - seqr.missing()) if seqr else 0,
            "duplicates_not_written": dict(self.ticks_left_out),
            "gap_requests": self.gap_requests,
        }
