# TESTS ONLY: a Redis image for `make test-deploy` where redis:*-alpine cannot be pulled: the
# local base + Debian's redis-server (7.0). Takes redis-server arguments like the official image.
ARG BASE_IMAGE=tradefleet-base:bookworm
FROM ${BASE_IMAGE}
RUN apt-get update -q \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends redis-server \
    && rm -rf /var/lib/apt/lists/*
USER redis
EXPOSE 6379
HEALTHCHECK --interval=2s --timeout=3s --retries=30 CMD redis-cli ping | grep -q PONG
ENTRYPOINT []
CMD ["redis-server", "--protected-mode", "no"]
