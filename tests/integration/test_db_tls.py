"""The database over TLS with a password from a secret file (db.password_file, db.sslmode,
db.ssl_ca_file): a private PostgreSQL that accepts only TLS with a password on TCP."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import psycopg
import pytest

from libs.common.config import load_settings
from libs.common.localinfra import start_postgres
from libs.common.storage.migrate import migrate
from tests.kit.certs import certificates

PASSWORD = "s3cret:with/odd&chars"


def _server_files(tmp: Path) -> tuple[Path, Path, Path]:
    certs = tmp / "certs"
    certs.mkdir()
    ca, cert, key = certificates(certs)
    if os.geteuid() == 0:  # PostgreSQL runs as postgres and insists on owning its key, 0600
        os.chmod(certs, 0o755)
        for path in (cert, key):
            shutil.chown(path, user="postgres")
    os.chmod(key, 0o600)
    return ca, cert, key


def test_tls_with_a_password_from_a_file_and_nothing_less(tmp_path: Path) -> None:
    if not shutil.which("openssl"):
        pytest.skip("openssl is not installed: no certificates to test with")
    ca, cert, key = _server_files(tmp_path)
    cluster = start_postgres(
        tmp_path / "pg", options=f"-c ssl=on -c ssl_cert_file={cert} -c ssl_key_file={key}"
    )
    try:
        with psycopg.connect(cluster.url, autocommit=True) as conn:
            conn.execute(psycopg.sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                psycopg.sql.Identifier(cluster.run_as or os.environ.get("USER", "root")),
                psycopg.sql.Literal(PASSWORD),
            ))  # fmt: skip
            (cluster.data_dir / "pg_hba.conf").write_text(
                "local all all trust\n"
                "hostssl all all 127.0.0.1/32 scram-sha-256\n"
                "host all all 127.0.0.1/32 reject\n"
            )
            conn.execute("SELECT pg_reload_conf()")
        secret = tmp_path / "db-password"
        secret.write_text(PASSWORD + "\n")
        tls = {"url": cluster.url, "sslmode": "verify-full", "ssl_ca_file": ca}
        db = load_settings(None, db={**tls, "password_file": secret}).db
        with psycopg.connect(db.url or "") as conn:
            row = conn.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone()
        assert row == (True,)
        assert migrate(db.url or "", db)[0] == "native"  # what `up` and the recorder run first
        assert PASSWORD not in db.redacted() and "password=%2A%2A%2A" in db.redacted()
        # No password, no TLS, or a CA that did not sign the server's certificate: refused.
        with pytest.raises(psycopg.OperationalError, match="password"):
            psycopg.connect(load_settings(None, db=tls).db.url or "", connect_timeout=5)
        plain = {"url": cluster.url, "sslmode": "disable", "password_file": secret}
        with pytest.raises(psycopg.OperationalError, match=r"no encryption|rejects connection"):
            psycopg.connect(load_settings(None, db=plain).db.url or "", connect_timeout=5)
        other_ca, _, _ = certificates(_fresh(tmp_path / "other"))
        stranger = {**tls, "ssl_ca_file": other_ca, "password_file": secret}
        with pytest.raises(psycopg.OperationalError, match="certificate verify failed"):
            psycopg.connect(load_settings(None, db=stranger).db.url or "", connect_timeout=5)
    finally:
        cluster.stop()


def _fresh(path: Path) -> Path:
    path.mkdir()
    return path
