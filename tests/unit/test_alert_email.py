"""The email sink against a real SMTP server (aiosmtpd, in its own thread): what arrives, STARTTLS
then AUTH, and which failures are worth a retry (SinkError) and which are not (PermanentSinkError)."""

from __future__ import annotations

import asyncio
import email
import email.policy
import shutil
import socket
import ssl
import subprocess
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import structlog
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session

from libs.common.config import EmailSettings
from services.alerts.sinks import Message, PermanentSinkError, Sink, SinkError
from services.alerts.smtp import EmailSink

HOST = "127.0.0.1"
USERNAME = "alerts"
PASSWORD = "correct-horse-battery-staple"
RECIPIENTS = ["ops@example.com", "oncall@example.com"]
SENDER = "tradefleet@example.com"

MESSAGE = Message(
    key="fastlane:quarantine:60m",
    severity="critical",
    source="fastlane",
    title="model 60m quarantined",
    body="drift <3 sigma> for 5 bars",
    count=37,
    window_s=300,
    labels={"model": "60m"},
    last_ns=1_700_000_000_000_000_000,
)


@dataclass
class Delivery:
    envelope: Envelope
    over_tls: bool
    authenticated: bool


@dataclass
class RecordingHandler:
    """Keeps what arrives; answers DATA (and RCPT, when set) with the reply it is given."""

    data_reply: str = "250 OK"
    rcpt_reply: str | None = None
    deliveries: list[Delivery] = field(default_factory=list)

    async def handle_RCPT(
        self, server: Any, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        if self.rcpt_reply:
            return self.rcpt_reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Session, envelope: Envelope) -> str:
        self.deliveries.append(Delivery(envelope, session.ssl is not None, bool(session.authenticated)))
        return self.data_reply


def check_credentials(
    server: Any, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
) -> AuthResult:
    valid = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (
        USERNAME.encode(),
        PASSWORD.encode(),
    )
    return AuthResult(success=valid, handled=False)  # not handled: the server answers 235 or 535


class EphemeralPortController(Controller):
    """Listens on a port the OS picks (port=0), so parallel runs never collide: aiosmtpd's start()
    connects to self.port to check the server is up, so it is set to the bound port first."""

    def _trigger_server(self) -> None:
        assert isinstance(self.server, asyncio.Server)
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()


@contextmanager
def smtp_server(handler: RecordingHandler, **smtp_parameters: Any) -> Iterator[EphemeralPortController]:
    controller = EphemeralPortController(handler, hostname=HOST, port=0, **smtp_parameters)
    controller.start()
    try:
        yield controller
    finally:
        controller.stop()


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (the cryptography package is not in the venv)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "1", "-subj", "/CN=localhost", "-addext", f"subjectAltName=IP:{HOST}",
         "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


@pytest.fixture(scope="module")
def server_tls(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*certificate)
    return context


@pytest.fixture(scope="module")
def client_tls(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(certificate[0]))


@contextmanager
def secured_server(server_tls: ssl.SSLContext) -> Iterator[tuple[EphemeralPortController, RecordingHandler]]:
    """STARTTLS required, then AUTH (offered only over TLS) required."""
    handler = RecordingHandler()
    with smtp_server(
        handler,
        tls_context=server_tls,
        require_starttls=True,
        authenticator=check_credentials,
        auth_required=True,
    ) as server:
        yield server, handler


def settings(port: int, **overrides: Any) -> EmailSettings:
    values: dict[str, Any] = {
        "host": HOST,
        "port": port,
        "sender": SENDER,
        "recipients": RECIPIENTS,
        "starttls": False,
        "timeout_s": 5.0,
    }
    return EmailSettings(**(values | overrides))


def login(port: int, password: str = PASSWORD, **overrides: Any) -> EmailSettings:
    return settings(port, starttls=True, username=USERNAME, password=password, **overrides)


def unused_port() -> int:
    with closing(socket.socket()) as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


async def test_one_multipart_email_to_every_recipient() -> None:
    handler = RecordingHandler()
    with smtp_server(handler) as server:
        sink: Sink = EmailSink(settings(server.port))  # mypy checks it keeps the protocol
        await sink.send(MESSAGE)
        await sink.close()

    [delivery] = handler.deliveries
    assert delivery.envelope.mail_from == SENDER
    assert delivery.envelope.rcpt_tos == RECIPIENTS
    assert isinstance(delivery.envelope.content, bytes)
    mail = email.message_from_bytes(delivery.envelope.content, policy=email.policy.default)
    assert (
        mail["Subject"] == MESSAGE.headline() == "[CRITICAL] fastlane: model 60m quarantined (x37 in 5 min)"
    )
    assert mail["From"] == SENDER
    assert mail["To"] == ", ".join(RECIPIENTS)
    assert mail["Date"] and mail["Message-ID"].endswith("@example.com>")
    assert mail.get_content_type() == "multipart/alternative"
    plain, html = mail.get_body(("plain",)), mail.get_body(("html",))
    assert plain is not None and html is not None
    # Lines end in CRLF on the wire.
    assert plain.get_content().splitlines() == MESSAGE.text().splitlines()
    assert html.get_content().splitlines() == MESSAGE.html().splitlines()
    assert "drift &lt;3 sigma&gt;" in html.get_content()


@pytest.mark.parametrize("password_from", ["settings", "file"])
async def test_starttls_then_auth(
    password_from: str, server_tls: ssl.SSLContext, client_tls: ssl.SSLContext, tmp_path: Path
) -> None:
    with secured_server(server_tls) as (server, handler):
        if password_from == "file":
            secret = tmp_path / "smtp_password"
            secret.write_text(PASSWORD + "\n")  # as a mounted secret usually is
            config = login(server.port, password="", password_file=secret)
        else:
            config = login(server.port)
        await EmailSink(config, tls_context=client_tls).send(MESSAGE)

    [delivery] = handler.deliveries
    assert delivery.over_tls and delivery.authenticated
    assert delivery.envelope.rcpt_tos == RECIPIENTS


async def test_wrong_credentials_are_permanent(
    server_tls: ssl.SSLContext, client_tls: ssl.SSLContext
) -> None:
    with secured_server(server_tls) as (server, handler):
        sink = EmailSink(login(server.port, password="wrong"), tls_context=client_tls)
        with pytest.raises(PermanentSinkError, match="SMTPAuthenticationError"):
            await sink.send(MESSAGE)
    assert handler.deliveries == []


async def test_untrusted_certificate_is_permanent(server_tls: ssl.SSLContext) -> None:
    with secured_server(server_tls) as (server, handler):
        sink = EmailSink(login(server.port))  # the system CAs: the self-signed certificate fails
        with pytest.raises(PermanentSinkError, match="certificate"):
            await sink.send(MESSAGE)
    assert handler.deliveries == []


async def test_server_without_starttls_is_permanent() -> None:
    handler = RecordingHandler()
    with smtp_server(handler) as server, pytest.raises(PermanentSinkError, match="STARTTLS"):
        await EmailSink(settings(server.port, starttls=True)).send(MESSAGE)
    assert handler.deliveries == []


async def test_credentials_are_never_sent_in_plain_text() -> None:
    handler = RecordingHandler()
    with smtp_server(handler) as server:
        sink = EmailSink(settings(server.port, username=USERNAME, password=PASSWORD))
        assert sink.problem and "plain connection" in sink.problem
        with pytest.raises(PermanentSinkError, match="plain connection"):
            await sink.send(MESSAGE)
    assert handler.deliveries == []


async def test_server_down_is_worth_a_retry() -> None:
    with pytest.raises(SinkError) as info:
        await EmailSink(settings(unused_port())).send(MESSAGE)
    assert not isinstance(info.value, PermanentSinkError)


async def test_silent_server_times_out_and_is_worth_a_retry() -> None:
    with closing(socket.create_server((HOST, 0))) as silent:  # accepts, never greets
        port = silent.getsockname()[1]
        with pytest.raises(SinkError, match="Timeout") as info:
            await EmailSink(settings(port, timeout_s=0.2)).send(MESSAGE)
    assert not isinstance(info.value, PermanentSinkError)


async def test_451_on_data_is_worth_a_retry() -> None:
    handler = RecordingHandler(data_reply="451 4.3.0 try again later")
    with smtp_server(handler) as server, pytest.raises(SinkError, match="451") as info:
        await EmailSink(settings(server.port)).send(MESSAGE)
    assert not isinstance(info.value, PermanentSinkError)


@pytest.mark.parametrize(
    ("rcpt_reply", "permanent"),
    [("550 5.1.1 no such user", True), ("450 4.2.0 greylisted, come back later", False)],
)
async def test_all_recipients_refused(rcpt_reply: str, permanent: bool) -> None:
    handler = RecordingHandler(rcpt_reply=rcpt_reply)
    with smtp_server(handler) as server, pytest.raises(SinkError, match="SMTPRecipientsRefused") as info:
        await EmailSink(settings(server.port)).send(MESSAGE)
    assert isinstance(info.value, PermanentSinkError) == permanent


async def test_password_never_logged(
    server_tls: ssl.SSLContext, client_tls: ssl.SSLContext, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG")  # the client's and the server's loggers alike
    errors: list[str] = []
    with structlog.testing.capture_logs() as events, secured_server(server_tls) as (server, _):
        await EmailSink(login(server.port), tls_context=client_tls).send(MESSAGE)
        with pytest.raises(PermanentSinkError) as refused:
            await EmailSink(login(server.port, password=PASSWORD + "x"), tls_context=client_tls).send(MESSAGE)
        errors.append(repr(refused.value))
        plain = EmailSink(settings(server.port, username=USERNAME, password=PASSWORD))
        with pytest.raises(PermanentSinkError) as plain_refused:
            await plain.send(MESSAGE)
        errors.append(repr(plain_refused.value))

    assert caplog.records and events  # something was logged, so the check below means something
    everything = "\n".join([caplog.text, repr(events), *errors])
    assert PASSWORD not in everything
