#!/usr/bin/env bash
# `make test-deploy`: the fleet as containers, from the Dockerfile, through the compose stack.
#  1. a container engine: docker.io installed when missing, dockerd started when none answers,
#     Compose v2 and buildx (trixie's packages) when missing. Where no engine can start (no root,
#     no apt, no dockerd that comes up) it SKIPS, saying why, and exits 0.
#  2. the local base and the test stand-ins for NATS, PostgreSQL and Redis (built once, cached:
#     deploy/docker/build-base.sh).
#  3. the project's image, tradefleet:0.1.0, from the Dockerfile with that base as BASE_IMAGE
#     (never --pull: no registry is reachable).
#  4. NATS users (`tradefleet nats config`, in a scratch folder), then `docker compose up --wait`
#     with deploy/compose/docker-compose.yml + deploy/docker/compose.test.yml (tests only).
#  5. tests/deploy/check_stack.py: the sample day replayed, intents, approvals and fills, every
#     container healthy and /readyz 200, journal and spill written by the service user.
#  6. always: the stack stopped and removed with its volumes (and dockerd, if this started it).
set -euo pipefail
cd "$(dirname "$0")/../.."

NICE=(nice -n 19)
PROJECT=tradefleet-deploytest
BASE=${TRADEFLEET_BASE_IMAGE:-tradefleet-base:bookworm}
IMAGE=tradefleet:0.1.0
WORK=$PWD/var/deploy-test
T0=$SECONDS

say() { printf 'test-deploy: [%4ss] %s\n' "$((SECONDS - T0))" "$*"; }
skip() { printf 'test-deploy: SKIPPED: %s\n' "$*"; exit 0; }

# --- 1. the engine ------------------------------------------------------------------------------
STARTED_DOCKERD=""
engine() {
    if ! command -v dockerd >/dev/null; then
        [ "$(id -u)" = 0 ] || skip "no container engine (dockerd) and not root to install docker.io"
        command -v apt-get >/dev/null || skip "no container engine (dockerd) and no apt-get to install docker.io"
        say "installing docker.io"
        DEBIAN_FRONTEND=noninteractive "${NICE[@]}" apt-get install -y -q docker.io >/dev/null \
            || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive "${NICE[@]}" apt-get install -y -q docker.io >/dev/null; } \
            || skip "docker.io could not be installed (apt-get install docker.io failed)"
    fi
    if ! docker info >/dev/null 2>&1; then
        [ "$(id -u)" = 0 ] || skip "dockerd is not running and starting it needs root"
        mkdir -p "$WORK"
        say "starting dockerd (log: $WORK/dockerd.log)"
        dockerd --storage-driver=overlay2 >"$WORK/dockerd.log" 2>&1 &
        STARTED_DOCKERD=$!
        for _ in $(seq 60); do
            docker info >/dev/null 2>&1 && break
            kill -0 "$STARTED_DOCKERD" 2>/dev/null || break
            sleep 1
        done
        docker info >/dev/null 2>&1 \
            || skip "dockerd does not start here: $(tail -n 3 "$WORK/dockerd.log" | tr '\n' ' ')"
    fi
    if ! docker compose version 2>/dev/null | grep -qE 'version v?2' || ! docker buildx version >/dev/null 2>&1; then
        # bookworm's docker-compose is v1 (too old for the compose spec used here): trixie's
        # docker-compose and docker-buildx (Go binaries needing only libc6 >= 2.34), fetched with
        # a private apt state so the machine's sources and packages are left as they are.
        [ "$(id -u)" = 0 ] || skip "Compose v2 / buildx missing and not root to install them"
        say "installing docker-compose (v2) and docker-buildx from trixie"
        local apt=/var/tmp/tradefleet-trixie-apt
        mkdir -p "$apt/lists/partial" "$apt/archives/partial"
        echo "deb ${DEBIAN_MIRROR:-http://deb.debian.org/debian} trixie main" >"$apt/sources.list"
        local opts=(-o "Dir::Etc::sourcelist=$apt/sources.list" -o Dir::Etc::sourceparts=-
            -o "Dir::State::lists=$apt/lists" -o "Dir::Cache=$apt/cache" -o APT::Sandbox::User=root)
        "${NICE[@]}" apt-get -q "${opts[@]}" update >/dev/null
        (cd "$apt/archives" && "${NICE[@]}" apt-get -q "${opts[@]}" download docker-compose docker-buildx >/dev/null \
            && "${NICE[@]}" dpkg -i docker-compose_*.deb docker-buildx_*.deb >/dev/null) \
            || skip "Compose v2 / buildx could not be installed from trixie"
    fi
    say "engine: $(docker version -f 'dockerd {{.Server.Version}}'), $(docker compose version --short | sed 's/^/compose /')"
}

COMPOSE=(docker compose -p "$PROJECT" -f deploy/compose/docker-compose.yml -f deploy/docker/compose.test.yml)
cleanup() {
    local rc=$?
    if [ -n "${UP:-}" ]; then
        if [ "$rc" != 0 ]; then
            say "failed: the last log lines of each container"
            "${COMPOSE[@]}" ps -a || true
            "${COMPOSE[@]}" logs --no-color --tail 15 || true
        fi
        say "stopping and removing the stack"
        "${COMPOSE[@]}" down --volumes --remove-orphans --timeout 10 >/dev/null 2>&1 || true
    fi
    rm -rf "$WORK/nats"
    if [ -n "$STARTED_DOCKERD" ]; then
        say "stopping the dockerd this started"
        kill "$STARTED_DOCKERD" 2>/dev/null && wait "$STARTED_DOCKERD" 2>/dev/null || true
    fi
    say "done (exit $rc)"
}
trap cleanup EXIT

engine

# --- 2. the local base and the infrastructure stand-ins (cached) ---------------------------------
say "base images"
TRADEFLEET_BASE_IMAGE=$BASE deploy/docker/build-base.sh

# --- 3. the project's image ----------------------------------------------------------------------
say "building $IMAGE on $BASE"
"${NICE[@]}" docker build --quiet --build-arg BASE_IMAGE="$BASE" -t "$IMAGE" . >/dev/null

# --- 4. the stack ------------------------------------------------------------------------------
"${COMPOSE[@]}" down --volumes --remove-orphans --timeout 5 >/dev/null 2>&1 || true  # an earlier run's leftovers
rm -rf "$WORK/nats" && mkdir -p "$WORK/nats"
docker run --rm --user "$(id -u):$(id -g)" -v "$WORK/nats:/out" "$IMAGE" nats config --out /out --partitions 2 >/dev/null
export TRADEFLEET_TEST_NATS_DIR=$WORK/nats
say "docker compose up --wait ($(${COMPOSE[@]} config --services | wc -l) services)"
UP=1
"${COMPOSE[@]}" up --detach --wait --wait-timeout 420 --no-build --quiet-pull

# --- 5. the checks -----------------------------------------------------------------------------
say "stack up; checking the replay"
python3 tests/deploy/check_stack.py "${COMPOSE[@]}"
