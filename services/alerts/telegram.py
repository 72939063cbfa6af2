"""The Telegram sink: each alert as a plain-text message to every configured chat.

Built on python-telegram-bot (``telegram.Bot``), not hand-written HTTP: it follows the Bot API's
types and error replies, and the command desk (desk.py) polls updates with it too.
``api_url`` may name a self-hosted Bot API server (or, in tests, a fake one).

Temporary (``SinkError``): no answer, a timeout, a rate limit (RetryAfter), a 5xx, an unreadable
reply. Permanent (``PermanentSinkError``): the token refused (401/404); for one chat, the bot
blocked or removed (403), a bad request such as an unknown chat (400), a chat that became a
supergroup. A bad chat does not keep the alert from the other chats.

The chats that have a message are remembered, so a retry after a temporary failure goes only to
the others: nobody gets an alert twice.

The token is part of every request URL, and python-telegram-bot (DEBUG) and httpx (INFO) log those
URLs: a filter on their loggers masks it, and our error texts are masked before they leave.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from urllib.parse import quote

from telegram import Bot, LinkPreviewOptions
from telegram.error import BadRequest, ChatMigrated, Forbidden, InvalidToken, TelegramError
from telegram.request import HTTPXRequest

from libs.common.config import TelegramSettings
from libs.common.logging import get_logger
from services.alerts.sinks import Message, PermanentSinkError, SinkError

log = get_logger(__name__)

MAX_TEXT = 4096  # Telegram refuses longer texts (400): cut the tail rather than lose the alert
MAX_PENDING = 1024  # messages still owed to some chat; past this the oldest are forgotten
TOKEN_MASK = "<telegram-token>"
# Loggers that print request URLs or exceptions carrying them (filters do not reach child loggers,
# so each is named).
URL_LOGGERS = (
    "httpx",
    "telegram",
    "telegram.Bot",
    "telegram.request.BaseRequest",
    "telegram.request.HTTPXRequest",
    "telegram.ext",
    "telegram.ext.Application",
    "telegram.ext.ExtBot",
    "telegram.ext.Updater",
)
NO_PREVIEW = LinkPreviewOptions(is_disabled=True)
# Refusals that concern one chat only; any other permanent error concerns the bot itself.
CHAT_REFUSALS = (Forbidden, BadRequest, ChatMigrated)
PERMANENT = (InvalidToken, *CHAT_REFUSALS)


def mask_tokens(text: str, tokens: set[str]) -> str:
    for token in tokens:
        text = text.replace(token, TOKEN_MASK).replace(quote(token, safe=""), TOKEN_MASK)
    return text


class TokenMask(logging.Filter):
    """Masks bot tokens in the records of the loggers it is put on, tracebacks included."""

    def __init__(self) -> None:
        super().__init__()
        self.tokens: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        masked = mask_tokens(text, self.tokens)
        if masked != text:
            record.msg, record.args = masked, None
        if record.exc_info and not record.exc_text:
            # Formatter.format uses exc_text when set instead of formatting exc_info itself.
            record.exc_text = mask_tokens(logging.Formatter().formatException(record.exc_info), self.tokens)
        return True


_TOKEN_MASK = TokenMask()


def guard_token(token: str) -> None:
    """From now on the library loggers print ``token`` masked."""
    _TOKEN_MASK.tokens.add(token)
    for name in URL_LOGGERS:
        logging.getLogger(name).addFilter(_TOKEN_MASK)  # a no-op when already there


def read_token(settings: TelegramSettings) -> tuple[str, str | None]:
    """``token``, else the content of ``token_file`` (a mounted secret); and why there is none when
    the file cannot be read (its path and the reason only, never what it holds)."""
    token = settings.token.get_secret_value().strip()
    if token or settings.token_file is None:
        return token, None
    try:
        return settings.token_file.read_text(encoding="utf-8").strip(), None
    except OSError as exc:
        return "", f"cannot read telegram token_file {settings.token_file}: {exc.strerror}"


@dataclass
class Progress:
    """Where one message stands: the chats that have it, and those that refused it for good."""

    delivered: set[int] = field(default_factory=set)
    refused: dict[int, str] = field(default_factory=dict)  # chat id -> why

    def done(self, chat_id: int) -> bool:
        return chat_id in self.delivered or chat_id in self.refused


class TelegramSink:
    name = "telegram"

    def __init__(self, settings: TelegramSettings) -> None:
        self._settings = settings
        self._token, self.problem = read_token(settings)
        self._chat_ids = list(dict.fromkeys(settings.chat_ids))  # each chat once, in order
        self._bot: Bot | None = None
        self._progress: dict[tuple[str, int], Progress] = {}
        if self._token:
            guard_token(self._token)
        if self.problem:
            log.warning("telegram sink misconfigured", problem=self.problem)

    @property
    def enabled(self) -> bool:
        """A token (or a token file, even unreadable: that is reported, not silently off) and chats."""
        has_token = bool(self._token or self._settings.token_file)
        return has_token and bool(self._chat_ids)

    async def send(self, message: Message) -> None:
        if not self.enabled:
            raise PermanentSinkError("telegram sink is off: token or chat_ids not set")
        if self.problem:
            raise PermanentSinkError(self.problem)
        bot = await self._ready_bot()
        key = (message.key, message.last_ns)
        progress = self._progress_of(key)
        text = message.text()[:MAX_TEXT]
        for chat_id in self._chat_ids:
            if progress.done(chat_id):
                continue
            try:
                await bot.send_message(chat_id, text, link_preview_options=NO_PREVIEW)
            except TelegramError as exc:
                if not isinstance(exc, CHAT_REFUSALS):
                    # Stop here: a server failing one chat is most likely failing the rest too.
                    if isinstance(exc, InvalidToken):
                        self._progress.pop(key, None)  # nothing more will go out with this token
                    raise self._error(exc, f"sendMessage to chat {chat_id}") from None
                progress.refused[chat_id] = self._explain(exc, f"chat {chat_id}")
            else:
                progress.delivered.add(chat_id)
        self._progress.pop(key, None)
        log.debug("telegram sent", key=message.key, chats=len(progress.delivered))
        if progress.refused:
            raise PermanentSinkError("telegram: " + "; ".join(progress.refused.values()))

    async def close(self) -> None:
        if self._bot is not None:
            await self._bot.shutdown()  # closes its HTTP clients; a no-op when never initialized

    async def _ready_bot(self) -> Bot:
        """The bot, initialized (its HTTP clients opened, the token checked by getMe) once."""
        if self._bot is None:
            self._bot = self._make_bot()
        try:
            await self._bot.initialize()
        except TelegramError as exc:
            raise self._error(exc, "getMe") from None
        return self._bot

    def _make_bot(self) -> Bot:
        api_url = self._settings.api_url
        timeout = self._settings.timeout_s
        request = HTTPXRequest(
            connection_pool_size=4,
            connect_timeout=timeout,
            read_timeout=timeout,
            write_timeout=timeout,
            pool_timeout=timeout,
        )
        # Bot appends the token to both bases: requests go to {api_url}/bot<TOKEN>/sendMessage.
        return Bot(
            self._token,
            base_url=f"{api_url}/bot",
            base_file_url=f"{api_url}/file/bot",
            request=request,
        )

    def _progress_of(self, key: tuple[str, int]) -> Progress:
        progress = self._progress.setdefault(key, Progress())
        while len(self._progress) > MAX_PENDING:  # messages the service gave up on
            del self._progress[next(iter(self._progress))]
        return progress

    def _error(self, exc: TelegramError, doing: str) -> SinkError:
        text = self._explain(exc, doing)
        if isinstance(exc, PERMANENT):
            return PermanentSinkError(text)
        return SinkError(text)  # NetworkError, TimedOut, RetryAfter, 5xx, unreadable replies

    def _explain(self, exc: TelegramError, doing: str) -> str:
        # Raised "from None" by the callers: the library's exception may carry the token.
        return mask_tokens(f"{doing}: {type(exc).__name__}: {exc}", {self._token})
