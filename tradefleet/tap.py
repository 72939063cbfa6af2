"""`tradefleet tap`: decode and print any event on any subject, readable by default.

Times print in New York time (the market's), numbers rounded to what a reader compares; ``--raw``
keeps the exact integers and floats, ``--json`` one JSON object per line for tools. Derived
numbers a reader cannot guess are explained once, the first time their event type appears.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import math
import re
import sys
from typing import Any

import nats.errors
import nats.js.errors
from nats.js import api as js_api

from libs.common import codec
from libs.common.markettime import NEW_YORK as NY
from libs.common.markettime import ny_datetime
from libs.common.nats_bus import server_partitions
from proto.subjects import partitioned_patterns, stream_of_pattern, unmapped
from tradefleet.reach import Target, connect

# Fields holding nanoseconds since the epoch (any *_ns field, the two every event has, score_ts).
TIME_FIELD = re.compile(r"^(ts_event|ts_init|score_ts|.*_ns)$")
EXPLAIN = {
    "Prediction": "signal = (probability - the model's median out-of-fold probability) / its 90th "
    "percentile distance from that median, clipped to [-1, 1]: +1 is a strong call up for this model",
    "QosScore": "score = sum of weights[tf] * components[tf]; enter above the entry threshold, exit "
    "below the exit threshold (qos settings)",
    "PolicySignal": "scale = the share of QOS's order size the RL policy takes; timing wait defers the entry",
}


class TapError(Exception):
    """A tap that cannot start (a subject it cannot replay): one line for the operator."""


def parse_since(text: str, now: dt.datetime | None = None) -> dt.datetime:
    """ISO 8601 (a time without zone is New York's), or a relative '-5m' / '-30s' / '-2h' / '-1d'."""
    now = now or dt.datetime.now(dt.UTC)
    rel = re.fullmatch(r"-(\d+(?:\.\d+)?)([smhd])", text.strip())
    if rel:
        seconds = float(rel.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[rel.group(2)]
        return now - dt.timedelta(seconds=seconds)
    try:
        parsed = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"{text!r} is not a time: use ISO 8601 (2013-10-08T09:30, New York time without a zone) "
            "or a relative -30s, -5m, -2h, -1d"
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=NY)


def ny_time(ns: int) -> str:
    """2013-10-08 09:31:00.123 in New York time."""
    stamp = ny_datetime(ns)
    return stamp.strftime("%Y-%m-%d %H:%M:%S.") + f"{stamp.microsecond // 1000:03d}"


def readable(key: str, value: Any) -> Any:
    """A value as a reader wants it: times in New York, floats to a few significant places."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and TIME_FIELD.match(key) and value > 10**17:
        return ny_time(value)
    if isinstance(value, float):
        return round_float(value)
    if isinstance(value, dict):
        return {k: readable(k, v) for k, v in value.items()}
    if isinstance(value, list):
        return [readable(key, v) for v in value]
    return value


def round_float(x: float) -> float | str:
    """Prices keep cents and sub-cents (4 places), small numbers 4 significant digits."""
    if not math.isfinite(x):
        return str(x)
    if x == 0 or abs(x) >= 1:
        return round(x, 4)
    return float(f"{x:.4g}")


def render(subject: str, event: dict[str, Any], as_json: bool, raw: bool = False) -> str:
    if not raw:
        event = {k: readable(k, v) for k, v in event.items()}
    if as_json:
        return json.dumps({"subject": subject, **event}, default=str)
    kind = event.pop("type")
    when = event.pop("ts_event", "")
    if not raw:
        event.pop("ts_init", None)  # when this process made it: --raw shows it
    fields = " ".join(f"{k}={_compact(v)}" for k, v in event.items())
    return f"{when}  {subject:<28} {kind:<14} {fields}"


def _compact(value: Any) -> str:
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"), default=str)
    return str(value)


async def run_tap(
    target: Target,
    subject: str,
    count: int | None,
    as_json: bool,
    raw: bool,
    since: dt.datetime | None,
    timeout: float | None,
) -> int:
    stream = stream_of_pattern(subject) if since is not None else None
    if since is not None and stream is None:
        raise TapError(f"--since needs a JetStream subject; {subject!r} is core NATS (live only)")
    finished = asyncio.Event()
    # The fleet going away ends the tap, quietly (no reconnect loop, no tracebacks).
    nc = await connect(target, "tradefleet-tap", on_closed=finished.set)
    partitions = await server_partitions(nc) if since is None else 1
    print(f"tapping {subject} on {target.url} ({target.source})", file=sys.stderr, flush=True)
    seen = 0
    explained: set[str] = set()

    def show(subject: str, event: dict[str, Any]) -> None:
        kind = str(event.get("type"))
        if not as_json and not raw and kind in EXPLAIN and kind not in explained:
            explained.add(kind)
            print(f"# {kind}: {EXPLAIN[kind]}", flush=True)
        print(render(subject, event, as_json, raw), flush=True)

    async def on_msg(msg: Any) -> None:
        nonlocal seen
        if finished.is_set():
            return
        try:
            obj = codec.decode(msg.data)
        except codec.DecodeFailure as exc:
            print(f"{msg.subject:<28} UNDECODABLE    {exc}", flush=True)
            return
        for event in getattr(obj, "events", None) or [obj]:
            show(unmapped(msg.subject), codec.to_builtins(event))
            seen += 1
            if count is not None and seen >= count:
                finished.set()
                return

    try:
        if since is not None:
            config = js_api.ConsumerConfig(
                deliver_policy=js_api.DeliverPolicy.BY_START_TIME, opt_start_time=since
            )
            try:
                await nc.jetstream().subscribe(
                    subject, cb=on_msg, ordered_consumer=True, config=config, stream=stream
                )
            except (nats.errors.TimeoutError, nats.js.errors.Error) as exc:
                raise TapError(f"cannot replay {subject} from {since.isoformat()}: {exc!r}") from None
        else:
            # On a server that maps symbols to partitions, the catalog's subject is shown.
            for pattern in partitioned_patterns(subject, partitions, None):
                await nc.subscribe(pattern, cb=on_msg)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(finished.wait(), timeout=timeout)
        if nc.is_closed or not nc.is_connected:
            print(f"{target.url} went away: the tap ends", file=sys.stderr, flush=True)
    except (KeyboardInterrupt, asyncio.CancelledError):
        pass
    finally:
        with contextlib.suppress(Exception):
            await nc.close()
        sys.stdout.flush()
    return 0 if count is None or seen >= count else 1
