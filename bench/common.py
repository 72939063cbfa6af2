"""Shared bench plumbing: a private nats-server, process CPU accounting, medians."""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def machine() -> dict[str, Any]:
    """What ran it: these figures only mean something beside their machine (shared and noisy;
    compare same-run ratios, not absolutes across machines)."""
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "host": platform.node(),
        "cpu": model or platform.processor(),
        "cores": os.cpu_count(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": platform.python_version(),
        "system": platform.platform(),
    }


def commit() -> str:
    """The code measured: HEAD, marked when the working tree had changes."""
    repo = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=repo,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{head}+dirty" if dirty else head


def command() -> str:
    """How this process was started: ``python -m bench.NAME ARGS`` (``make bench`` runs
    ``python -m bench.run_all``)."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    args = " ".join(sys.argv[1:])
    return f"python -m {spec.name} {args}".strip() if spec is not None else " ".join(sys.argv)


def save(name: str, data: dict[str, Any]) -> Path:
    """bench/results/NAME.json: the figures with what measured them (machine, date, commit and
    the command), so a figure quoted anywhere can be traced to the run that made it."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    record = {
        "bench": name,
        "command": command(),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "commit": commit(),
        "machine": machine(),
        "figures": data,
    }
    path.write_text(json.dumps(record, indent=2) + "\n")
    return path


def bench_db_url() -> str:
    return os.environ.get("TRADEFLEET_BENCH_DB_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def service_ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def spawn_service(
    name: str, url: str, port: int, tmp: Path, settings: dict[str, str], timeout_s: float = 180
) -> subprocess.Popen[bytes]:
    """`tradefleet service NAME` on the bench's NATS, with only these TRADEFLEET_ settings (the
    caller's environment's are dropped); returns once it is ready."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRADEFLEET_")}
    env.update(
        TRADEFLEET_NATS_URL=url,
        TRADEFLEET_HTTP__PORT=str(port),
        TRADEFLEET_TELEMETRY__LOG_FORMAT="json",
        PYTHONPATH=str(Path(__file__).resolve().parents[1]),
        **settings,
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "tradefleet", "service", name],
        env=env,
        cwd=Path(__file__).resolve().parents[1],
        stdout=(tmp / f"{name}.log").open("ab"),
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + timeout_s
    while not service_ready(port):
        if time.monotonic() > deadline or proc.poll() is not None:
            raise RuntimeError(f"{name} did not start; see {tmp}/{name}.log")
        time.sleep(0.1)
    return proc
