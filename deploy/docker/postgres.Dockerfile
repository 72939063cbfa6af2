# TESTS ONLY: a PostgreSQL image for `make test-deploy` where timescale/timescaledb cannot be
# pulled: the local base + Debian's postgresql (15, no TimescaleDB: the schema falls back to
# native partitioning). Like the official image it creates POSTGRES_USER / POSTGRES_PASSWORD /
# POSTGRES_DB on first start, in PGDATA (/var/lib/postgresql/data).
ARG BASE_IMAGE=tradefleet-base:bookworm
FROM ${BASE_IMAGE}
RUN apt-get update -q \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends postgresql-15 \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /var/lib/postgresql/data /run/postgresql \
    && chown -R postgres:postgres /var/lib/postgresql /run/postgresql
COPY postgres-entrypoint.sh /usr/local/bin/postgres-entrypoint
ENV PGDATA=/var/lib/postgresql/data PATH=/usr/lib/postgresql/15/bin:$PATH
USER postgres
EXPOSE 5432
HEALTHCHECK --interval=2s --timeout=3s --retries=30 CMD pg_isready -h 127.0.0.1 -q
ENTRYPOINT ["/usr/local/bin/postgres-entrypoint"]
