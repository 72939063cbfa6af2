"""`tradefleet tap`: decode and print any event on any subject."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import re
import sys
from typing import Any

import nats
from nats.js import api as js_api

from libs.common import codec
from proto.subjects import stream_of_pattern


def parse_since(text: str, now: dt.datetime | None = None) -> dt.datetime:
    """ISO 8601, or a relative '-5m' / '-30s' / '-2h'."""
    now = now or dt.datetime.now(dt.UTC)
    rel = re.fullmatch(r"-(\d+(?:\.\d+)?)([smhd])", text.strip())
    if rel:
        seconds = float(rel.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[rel.group(2)]
        return now - dt.timedelta(seconds=seconds)
    parsed = dt.datetime.fromisoformat(text)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def render(subject: str, event: dict[str, Any], as_json: bool) -> str:
    if as_json:
        return json.dumps({"subject": subject, **event}, default=str)
    kind = event.pop("type")
    fields = " ".join(f"{k}={v}" for k, v in event.items())
    return f"{subject:<28} {kind:<14} {fields}"


async def run_tap(
    url: str, subject: str, count: int | None, as_json: bool, since: str | None, timeout: float | None
) -> int:
    nc = await nats.connect(url, connect_timeout=5, max_reconnect_attempts=3)
    seen = 0
    finished = asyncio.Event()

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
            print(render(msg.subject, codec.to_builtins(event), as_json), flush=True)
            seen += 1
            if count is not None and seen >= count:
                finished.set()
                return

    try:
        if since:
            stream = stream_of_pattern(subject)
            if stream is None:
                print(
                    f"--since needs a JetStream subject; {subject!r} is core NATS (live only)",
                    file=sys.stderr,
                )
                return 2
            start = parse_since(since)
            config = js_api.ConsumerConfig(
                deliver_policy=js_api.DeliverPolicy.BY_START_TIME, opt_start_time=start
            )
            await nc.jetstream().subscribe(subject, cb=on_msg, ordered_consumer=True, config=config)
        else:
            await nc.subscribe(subject, cb=on_msg)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(finished.wait(), timeout=timeout)
    except (KeyboardInterrupt, asyncio.CancelledError):
        pass
    finally:
        with contextlib.suppress(Exception):
            await nc.close()
    return 0 if count is None or seen >= count else 1
