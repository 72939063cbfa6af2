# One image for every service; heavy services add their extra (e.g. --build-arg EXTRAS=sentiment).
# The base is pinned by digest; BASE_IMAGE overrides it (any Debian-based Python 3.11 with venv
# and pip: `make test-deploy` passes its locally built base, deploy/docker/build-base.sh).
ARG BASE_IMAGE=python:3.11-slim-bookworm@sha256:2e32f7d302adc1c37428355c1e646897c0c53f4fd60b6a551245fb90ee129f91

# --- build: a venv with the pinned dependencies first (a layer that survives source edits), then
# the project itself, without its dependencies (already there).
FROM ${BASE_IMAGE} AS build
ARG EXTRAS="ml,ib"
# Where torch comes from (sentiment and rl only): PyTorch's CPU index unless overridden (a mirror).
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PYTHONDONTWRITEBYTECODE=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 \
    PATH=/opt/venv/bin:$PATH
RUN python3 -m venv /opt/venv && pip install --upgrade "pip>=24" "setuptools>=69" wheel
WORKDIR /src
COPY pyproject.toml constraints.txt ./
# torch comes from PyTorch's CPU index first (PyPI's default Linux wheel pulls CUDA); only images
# with the sentiment or rl extra need it. The rest: the project's dependencies and its EXTRAS' as
# pyproject.toml lists them, each pinned by constraints.txt.
RUN case ",${EXTRAS}," in *,sentiment,*|*,rl,*) pip install \
        --index-url "${TORCH_INDEX_URL}" torch==2.13.0 ;; esac \
    && python -c 'import sys, tomllib; p = tomllib.load(open("pyproject.toml", "rb"))["project"]; \
extras = [e for e in sys.argv[1].split(",") if e]; \
print("\n".join(p["dependencies"] + [d for e in extras for d in p["optional-dependencies"][e]]))' \
        "${EXTRAS}" > /tmp/requirements.txt \
    && pip install -c constraints.txt -r /tmp/requirements.txt
COPY README.md ./
COPY proto ./proto
COPY libs ./libs
COPY services ./services
COPY tradefleet ./tradefleet
COPY models ./models
RUN pip install --no-deps . && pip check

# --- runtime: the venv, the models and the sample data; runs as tradefleet (uid 10001).
FROM ${BASE_IMAGE} AS runtime
# LightGBM (the fast lane) needs OpenMP's runtime; the state directories belong to the service
# user so that named volumes mounted there start out writable by it (Docker copies the owner).
RUN if ! dpkg -s libgomp1 >/dev/null 2>&1; then \
        apt-get update -q && apt-get install -y -q --no-install-recommends libgomp1 \
        && rm -rf /var/lib/apt/lists/*; fi \
    && groupadd --system --gid 10001 tradefleet \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/tradefleet \
        --shell /usr/sbin/nologin tradefleet \
    && mkdir -p /var/lib/tradefleet/cache /journal /spill \
    && chown -R tradefleet:tradefleet /var/lib/tradefleet /journal /spill
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY models ./models
COPY data/sample ./data/sample
COPY data/sentiment ./data/sentiment
# The dashboard the control service serves (control.web_dir): `make web` builds it first.
COPY web/dist ./web/dist
ENV PATH=/opt/venv/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 HOME=/var/lib/tradefleet \
    TRADEFLEET_HTTP__HOST=0.0.0.0 TRADEFLEET_HTTP__PORT=9100 TRADEFLEET_TELEMETRY__LOG_FORMAT=json \
    TRADEFLEET_EXECUTION__JOURNAL=/journal/execution-journal.msgpack \
    TRADEFLEET_RECORDER__SPILL_DIR=/spill \
    TRADEFLEET_FASTLANE__COMPILE_CACHE=/var/lib/tradefleet/cache/lleaves \
    TRADEFLEET_MARKET__CACHE=/var/lib/tradefleet/cache/calendar
USER tradefleet
EXPOSE 9100
# A service is healthy when its /readyz answers 200 (one-shot commands, `db migrate`, end first).
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/readyz' % os.environ.get('TRADEFLEET_HTTP__PORT', '9100'), timeout=2)"]
ENTRYPOINT ["tradefleet"]
CMD ["--help"]
