"""The email sink: one alert, one multipart (text + HTML) email, over SMTP with aiosmtplib.

Credentials only ever travel encrypted: STARTTLS comes before AUTH, or the port is 465 (TLS from the
first byte); a username with neither is refused before anything is sent. The password is read once
(from the settings or ``password_file``), kept as a ``SecretStr`` and never logged.
"""

from __future__ import annotations

import email.utils
import ssl
from email.message import EmailMessage

import aiosmtplib
from pydantic import SecretStr

from libs.common.config import EmailSettings
from libs.common.logging import get_logger
from services.alerts.sinks import Message, PermanentSinkError, SinkError

log = get_logger(__name__)

IMPLICIT_TLS_PORT = 465  # SMTPS: TLS from the first byte, no STARTTLS (RFC 8314)

# Failures that retrying cannot fix: credentials or addresses refused, the server lacking what the
# configuration needs, a certificate we do not trust. A 4xx reply is temporary even in one of these.
PERMANENT_FAILURES: tuple[type[BaseException], ...] = (
    aiosmtplib.SMTPAuthenticationError,
    aiosmtplib.SMTPSenderRefused,
    aiosmtplib.SMTPRecipientsRefused,
    aiosmtplib.SMTPNotSupported,
    ssl.SSLCertVerificationError,
)


class EmailSink:
    name = "email"

    def __init__(self, settings: EmailSettings, tls_context: ssl.SSLContext | None = None) -> None:
        self._settings = settings
        self._tls_context = tls_context  # None: the system's trusted CAs
        self._implicit_tls = settings.port == IMPLICIT_TLS_PORT
        # problem: why sending cannot work as configured; every send raises it as permanent, so the
        # service says so on the other sinks (it may also check it at start-up).
        self._password, self.problem = _password_and_problem(settings, self._implicit_tls)
        if self.problem:
            log.warning("email sink misconfigured", problem=self.problem)

    @property
    def enabled(self) -> bool:
        return bool(self._settings.host and self._settings.recipients)

    async def send(self, message: Message) -> None:
        if not self.enabled:
            raise PermanentSinkError("email sink is off: host or recipients not set")
        if self.problem:
            raise PermanentSinkError(self.problem)
        email_message = self._compose(message)
        where = f"smtp {self._settings.host}:{self._settings.port}"
        try:
            refused = await self._deliver(email_message)
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise _as_sink_error(exc, where) from exc
        if refused:  # some recipients got it: not worth a retry that would re-send to the others
            log.warning("email recipients refused", refused={r: str(e) for r, e in refused.items()})
        log.debug("email sent", where=where, recipients=len(self._settings.recipients), key=message.key)

    async def close(self) -> None:
        """Nothing to release: each send opens and closes its own connection."""

    def _compose(self, message: Message) -> EmailMessage:
        settings = self._settings
        email_message = EmailMessage()
        # A header may not hold a line break, and the title comes from data.
        email_message["Subject"] = " ".join(message.headline().split())
        email_message["From"] = settings.sender
        email_message["To"] = ", ".join(settings.recipients)
        email_message["Date"] = email.utils.formatdate(usegmt=True)
        # The sender's domain, not make_msgid's default socket.getfqdn(), which may block on DNS.
        email_message["Message-ID"] = email.utils.make_msgid(domain=_domain_of(settings.sender))
        email_message.set_content(message.text())
        email_message.add_alternative(message.html(), subtype="html")
        return email_message

    async def _deliver(self, email_message: EmailMessage) -> dict[str, aiosmtplib.SMTPResponse]:
        """One connection per email: alerts are rare (deduped, a few an hour at worst), so a held
        connection would mostly be one the server has already timed out."""
        settings = self._settings
        smtp = aiosmtplib.SMTP(
            hostname=settings.host,
            port=settings.port,
            use_tls=self._implicit_tls,
            start_tls=False,  # done in _secure, so a server without STARTTLS is told apart
            tls_context=self._tls_context,
            timeout=settings.timeout_s,  # per step: connect, each command, the TLS handshake
        )
        async with smtp:
            await self._secure(smtp)
            if settings.username:
                await smtp.login(settings.username, self._password.get_secret_value())
            refused, _ = await smtp.send_message(
                email_message, sender=settings.sender, recipients=settings.recipients
            )
        return refused

    async def _secure(self, smtp: aiosmtplib.SMTP) -> None:
        """STARTTLS before anything else when configured. aiosmtplib's own start_tls=True raises a
        bare SMTPException when the server does not offer it, which reads like any other failure;
        this says what is missing, and it is permanent."""
        await smtp.ehlo()
        if self._settings.starttls and not self._implicit_tls:
            if not smtp.supports_extension("starttls"):
                raise aiosmtplib.SMTPNotSupported("the server does not offer STARTTLS")
            await smtp.starttls()
            await smtp.ehlo()  # what the server offered in plain text no longer counts (RFC 3207)
        if self._settings.username and not smtp.supports_extension("auth"):
            raise aiosmtplib.SMTPNotSupported("the server does not offer AUTH")


def _password_and_problem(settings: EmailSettings, implicit_tls: bool) -> tuple[SecretStr, str | None]:
    """The password (settings first, then password_file), and why sending cannot work, if so."""
    if settings.username and not (settings.starttls or implicit_tls):
        return SecretStr(""), (
            "refusing to send SMTP credentials over a plain connection: "
            f"set starttls or use port {IMPLICIT_TLS_PORT} (implicit TLS)"
        )
    if settings.password.get_secret_value() or settings.password_file is None:
        return settings.password, None
    try:
        # A mounted secret usually ends with a newline that is not part of the password.
        return SecretStr(settings.password_file.read_text().rstrip("\r\n")), None
    except OSError as exc:  # the path and the reason only: never the content
        return SecretStr(""), f"cannot read email password_file {settings.password_file}: {exc.strerror}"


def _domain_of(address: str) -> str:
    _, addr = email.utils.parseaddr(address)
    return addr.rpartition("@")[2] or "tradefleet"


def _as_sink_error(exc: BaseException, where: str) -> SinkError:
    reason = f"{where}: {type(exc).__name__}: {exc}"
    if _is_permanent(exc) and not _is_temporary_reply(exc):
        return PermanentSinkError(reason)
    return SinkError(reason)


def _is_permanent(exc: BaseException) -> bool:
    # A certificate refused during an implicit-TLS connect arrives wrapped in SMTPConnectError.
    return isinstance(exc, PERMANENT_FAILURES) or isinstance(exc.__cause__, ssl.SSLCertVerificationError)


def _is_temporary_reply(exc: BaseException) -> bool:
    """A 4xx reply (greylisting, a full queue, "451 try again later") asks us to come back."""
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        return any(_is_4xx(refusal.code) for refusal in exc.recipients)
    return isinstance(exc, aiosmtplib.SMTPResponseException) and _is_4xx(exc.code)


def _is_4xx(code: int) -> bool:
    return 400 <= code < 500
