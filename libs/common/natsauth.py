"""Least privilege on the bus, from the catalog: one NATS user per service (an nkey), whose
publish allow-list is what proto/subjects.py says it produces and whose subscribe allow-list is
what it consumes (CONSUMES), plus the JetStream API it needs to use (not to create) streams.

Users beside the services: ``tap`` (reads anything, publishes only what its consumers need),
``operator`` (the CLI's ctl: operator commands and their answers), ``admin`` (creates and
updates the streams: `tradefleet nats provision`), ``trainer`` (the scheduled retrain's
alert: `tradefleet train ... --alert`) and ``leaf`` (the on-prem site's leaf node:
what its services may do, connecting only as a leaf). The written file holds the
``authorization`` block and the partition ``mappings`` alone, so a site's server config can
include it.

Only risk may publish order.approved.*, only execution exec.*, only control, the Telegram desk
(alerts) and the operator ctl.* (execution ctl.kill alone, for the panic file).

`write(out_dir)` writes ``nats-server.conf`` (an ``authorization`` block and ``mappings`` to start a
server with, or include), one seed per user, ``USER.nk`` (0600; services read theirs through
``nats.nkey_seed_file``), and ``approval.key``, the risk gate's approval signing key
(``signing.approval_key_file`` of risk and execution).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import nkeys

from proto.subjects import (
    ANY_SERVICE,
    CATALOG,
    CONSUMES,
    PARTITIONS_PROBE,
    READ_ALL,
    SERVICES,
    SHARED_PUBLISHERS,
    covers,
    partition_mappings,
    partitioned_patterns,
)

INBOX = "_INBOX.>"
# Every client asks the server its partition count at connect (NatsBus._server_partitions).
PROBE = (PARTITIONS_PROBE, f"{PARTITIONS_PROBE}.*")
EDGE_SERVICES = ("md-gateway", "risk", "execution")  # the on-prem site, next to TWS / IB Gateway
# Using streams and consumers, never creating, changing or deleting streams: on the server's own
# JetStream, or a hub's through its domain ($JS.DOMAIN.API, nats.js_domain: a leaf node's).
_JS_API = (
    "API.INFO",
    "API.STREAM.NAMES",
    "API.STREAM.INFO.*",
    "API.STREAM.MSG.GET.*",
    "API.DIRECT.GET.>",
    "API.CONSUMER.>",
)
JS_USE = (
    *(f"$JS.{api}" for api in _JS_API),
    *(f"$JS.*.{api}" for api in _JS_API),
    "$JS.ACK.>",
    "$JS.FC.>",
)


@dataclass(frozen=True)
class Permissions:
    publish: tuple[str, ...]
    subscribe: tuple[str, ...]
    #: how the user may connect (the leaf: only as a leaf node); empty: as a client
    connection_types: tuple[str, ...] = ()

    def conf(self) -> dict[str, dict[str, list[str]]]:
        return {"publish": {"allow": list(self.publish)}, "subscribe": {"allow": list(self.subscribe)}}

    def entry(self, key: str) -> str:
        types = (
            f", allowed_connection_types: {json.dumps(list(self.connection_types))}"
            if self.connection_types
            else ""
        )
        return f"{{nkey: {key}, permissions: {json.dumps(self.conf())}{types}}}"


def produced(service: str) -> tuple[str, ...]:
    """The subjects a service may publish: its catalog entries, and of the shared ones its own."""
    out: set[str] = set()
    for entry in CATALOG:
        if entry.producer == service:
            out.add(entry.wildcard)
        elif entry.producer == ANY_SERVICE:
            head = entry.tokens[0]
            if head == "alert":
                out.add(entry.wildcard)  # any service raises alerts
            elif head in ("dlq", "hb", "ack"):
                out.add(f"{head}.{service}")  # its own dead letters, heartbeats, answers
    out.update(SHARED_PUBLISHERS.get(service, ()))
    return tuple(sorted(out))


def mapped(patterns: tuple[str, ...]) -> tuple[str, ...]:
    """The patterns with what they become on a server that maps partitions (the server checks
    permissions on the mapped subject: md.quote.IBM is published as md.quote.IBM.2)."""
    out = set(patterns)
    for pattern in patterns:
        out.update(partitioned_patterns(pattern, 2, None))
    return tuple(sorted(out))


def service_permissions(service: str) -> Permissions:
    publish = (*mapped(produced(service)), *JS_USE, *PROBE, INBOX)
    subscribe = (*mapped(CONSUMES.get(service, ())), f"sync.{service}", *PROBE, INBOX)
    return Permissions(tuple(sorted(set(publish))), tuple(sorted(set(subscribe))))


def group_permissions(group: str) -> Permissions:
    """A process group's user (fleet.groups: one connection for its services): what its members
    may do, together. The process holds each member's rights either way; one identity means one
    connection, which writes their messages in order (libs/common/group.py)."""
    members = [service_permissions(m) for m in group.split("+")]
    return Permissions(
        tuple(sorted({p for m in members for p in m.publish})),
        tuple(sorted({p for m in members for p in m.subscribe})),
    )


def users(groups: tuple[str, ...] | list[str] = ()) -> dict[str, Permissions]:
    """Every user of the bus and what it may do (``groups``: fleet.groups, a user each)."""
    out = {s.name: service_permissions(s.name) for s in SERVICES}
    out.update({g: group_permissions(g) for g in groups})
    # A tap reads anything; it publishes only what its (ordered, ephemeral) consumers need.
    out["tap"] = Permissions((*JS_USE, *PROBE, INBOX), (">",))
    # The CLI's ctl: operator commands in, their answers out.
    out["operator"] = Permissions(
        tuple(sorted({"ctl.>", *JS_USE, *PROBE, INBOX})), ("ack.*", INBOX, *PROBE, *READ_ALL)
    )
    # The scheduled retrain (`tradefleet train ... --alert`): it tells people what the promotion
    # gate did, and nothing else.
    out["trainer"] = Permissions(
        tuple(sorted({*mapped(("alert.*",)), *JS_USE, *PROBE, INBOX})), (INBOX, *PROBE)
    )
    # Streams are made and updated by `tradefleet nats provision` alone.
    out["admin"] = Permissions((">",), (">",))
    # The on-prem site's leaf node (md-gateway, risk, execution next to the broker): what crosses
    # the link is what those services may do, and it connects only as a leaf.
    edge = [out[s] for s in EDGE_SERVICES]
    out["leaf"] = Permissions(
        tuple(sorted({p for e in edge for p in e.publish})),
        tuple(sorted({p for e in edge for p in e.subscribe})),
        ("LEAFNODE",),
    )
    return out


def new_seed() -> str:
    return nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER).decode()


def public_key(seed: str) -> str:
    return str(nkeys.from_seed(seed.encode()).public_key.decode())


def write(
    out_dir: Path,
    seeds: dict[str, str] | None = None,
    partitions: int = 1,
    groups: tuple[str, ...] | list[str] = (),
) -> dict[str, Path]:
    """Write the server's authorization, its partition mappings (``partitions`` of the
    symbol-keyed subjects, proto.subjects.partition_mappings) and a seed per user (kept when
    already there, so a re-run changes permissions or partitions without changing anyone's
    identity); ``groups``: a user per process group too (GROUP.nk). Returns user -> seed file."""
    out_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(out_dir, 0o700)
    seeds = dict(seeds or {})
    files: dict[str, Path] = {}
    entries = []
    for user, perms in users(groups).items():
        path = out_dir / f"{user}.nk"
        if user not in seeds:
            seeds[user] = path.read_text().strip() if path.exists() else new_seed()
        if not path.exists() or path.read_text().strip() != seeds[user]:
            path.write_text(seeds[user] + "\n")
        os.chmod(path, 0o600)
        files[user] = path
        entries.append((user, public_key(seeds[user]), perms))
    lines = [
        "# Generated by `tradefleet nats config` from proto/subjects.py (the catalog): do not edit.",
        "# One user per service (an nkey); each may publish what it produces and subscribe to what",
        "# it consumes. Start a server with it (nats-server -c), or include it in yours.",
        "authorization {",
        "  users = [",
    ]
    for user, key, perms in entries:
        lines.append(f"    # {user}")
        lines.append(f"    {perms.entry(key)}")
    lines += ["  ]", "}", ""]
    # Scaling by partition: N replicas of features, fastlane, qos and policy each subscribe to
    # their own partitions; every other client to all (1: nothing mapped but the probe).
    lines.append(f"# {partitions} partition(s) of the symbol-keyed subjects (each replica's partition.count)")
    lines.append("mappings = {")
    maps = partition_mappings(partitions)
    lines += [f"  {json.dumps(src)}: {json.dumps(dest)}" for src, dest in maps.items()]
    lines += ["}", ""]
    (out_dir / "nats-server.conf").write_text("\n".join(lines))
    # Beside the bus's identities, the risk gate's approval signing key (signing.approval_key_file
    # of risk and execution alone): another secret of the fleet's, made once and kept.
    approval = out_dir / "approval.key"
    if not approval.exists():
        approval.write_text(os.urandom(32).hex() + "\n")
    os.chmod(approval, 0o600)
    return files


def may_subscribe(service: str, pattern: str) -> bool:
    return any(covers(allowed, pattern) for allowed in service_permissions(service).subscribe)
