"""Test helpers: polling instead of sleeping, subprocess services, a cuttable TCP proxy."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.kit.stubs import TEST_APPROVAL_KEY

REPO = Path(__file__).resolve().parents[1]


def wait_until(
    predicate: Callable[[], Any], timeout: float = 20.0, interval: float = 0.05, what: str = ""
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(interval)


async def await_until(
    predicate: Callable[[], Any], timeout: float = 20.0, interval: float = 0.02, what: str = ""
) -> Any:
    """Poll a predicate; one that returns an awaitable (e.g. ``asyncio.to_thread(...)``) is awaited,
    which keeps blocking checks (SQL) off the event loop the services under test run on."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        await asyncio.sleep(interval)


async def collector(nats_url: str, subject: str) -> tuple[Any, list[Any]]:
    """A plain nats-py subscriber that decodes everything on ``subject`` into a list."""
    import nats

    from libs.common import codec

    nc = await nats.connect(nats_url)
    seen: list[Any] = []

    async def on(msg: Any) -> None:
        seen.append(codec.decode(msg.data))

    await nc.subscribe(subject, cb=on)
    await nc.flush()
    return nc, seen


async def stored_events(nats_url: str, stream: str, seed: Path | None = None) -> list[Any]:
    """Every event a JetStream stream holds, in order (``seed``: a secured bus's reader)."""
    import nats

    from libs.common import codec

    nc = await nats.connect(nats_url, nkeys_seed=str(seed) if seed is not None else None)
    try:
        js = nc.jetstream()
        info = await js.stream_info(stream)
        return [
            codec.decode((await js.get_msg(stream, seq)).data or b"")
            for seq in range(info.state.first_seq, info.state.last_seq + 1)
        ]
    finally:
        await nc.close()


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """`tradefleet ARGS` from the checkout, its output captured."""
    return subprocess.run(
        [sys.executable, "-m", "tradefleet", *args],
        cwd=REPO,
        env=env if env is not None else service_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


# What a service builds once and only reads after (compiled trees, ONNX exports, the exchange's
# schedule) is shared by every test's processes, wherever they run from, instead of rebuilt in each
# test's folder (the sentiment export alone takes about 10 s). Writers rename into place.
SHARED_CACHES = {
    "TRADEFLEET_FASTLANE__COMPILE_CACHE": str(REPO / "var" / "lleaves-cache"),
    "TRADEFLEET_SENTIMENT__CACHE": str(REPO / "var" / "sentiment-cache"),
    "TRADEFLEET_MARKET__CACHE": str(REPO / "var" / "calendar-cache"),
}


def service_env(**settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRADEFLEET_")}
    env["TRADEFLEET_TELEMETRY__LOG_FORMAT"] = "json"
    # Fleets of tests run side by side: the control API on any free port, not each on 8600.
    env["TRADEFLEET_CONTROL__PORT"] = "0"
    # Every service process shares the tests' approval key: the risk gate signs with it, the
    # execution gateway checks it, and tests.kit.stubs.approved signs with it too.
    env["TRADEFLEET_SIGNING__APPROVAL_KEY"] = TEST_APPROVAL_KEY
    env.update(SHARED_CACHES)
    env.update(settings)
    return env


def start_service(name: str, env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    log = open(log_path, "ab")  # noqa: SIM115 - the child owns it
    return subprocess.Popen(
        [sys.executable, "-m", "tradefleet", "service", name],
        env=env,
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def http_json(port: int, path: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as resp:
            body = resp.read()
            try:
                return resp.status, json.loads(body)
            except ValueError:
                return resp.status, body.decode()
    except urllib.error.HTTPError as err:
        return err.code, None
    except OSError:
        return 0, None


class TcpProxy:
    """A loopback TCP proxy the test can cut and restore: a database outage without touching the
    database server (which other tests share)."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.server: asyncio.base_events.Server | None = None
        self.port = 0
        self.enabled = True
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.enabled:
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        if not self.enabled:  # cut while this connection was being set up
            writer.close()
            up_writer.close()
            return
        self._writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(Exception):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    def cut(self) -> None:
        self.enabled = False
        for w in list(self._writers):
            w.close()
        self._writers.clear()

    def restore(self) -> None:
        self.enabled = True

    async def stop(self) -> None:
        self.cut()
        if self.server is not None:
            self.server.close()


def train_fastlane(
    data: str, root: Path, promote: str, report: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """`tradefleet train fastlane` on one horizon with three folds (what the training tests run)."""
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "tradefleet",
            "train",
            "fastlane",
            "--data",
            data,
            "--horizons",
            "15m",
            "--folds",
            "3",
            "--registry",
            str(root),
            "--report",
            str(report or root / "report"),
            "--promote",
            promote,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=REPO,
    )


def record_vectors(dsn: str, vectors: list[Any]) -> None:
    """Feature vectors into a migrated store's feature_vectors, as the recorder writes them."""
    from libs.common.storage.writer import BatchWriter
    from proto.features import FeatureVector
    from services.recorder.core import SINGLE_ROW, days_of

    writer = BatchWriter(dsn)
    to_row = SINGLE_ROW[FeatureVector][1]
    writer.write(
        {"feature_vectors": [to_row(v) for v in vectors]},
        {},
        "recorder",
        {"feature_vectors": days_of(vectors)},
    )
    writer.close()
