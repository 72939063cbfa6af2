"""The Telegram command desk of the alerts service: polls the bot's updates and obeys operator
commands from the allow-listed chats (services/alerts/commands.py says which and how). It
publishes them as ``ctl.*`` and answers in the chat with what the responders said on ``ack.*``.
Telegram allows one getUpdates poller per bot (a second gets 409 Conflict): the service runs as
one replica.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from typing import Any

from telegram import Bot
from telegram import Message as TelegramMessage
from telegram.error import Conflict, InvalidToken, TelegramError
from telegram.request import HTTPXRequest

from libs.common.acks import Awaited
from libs.common.bus import Delivery
from libs.common.clock import LiveClock
from libs.common.config import TelegramSettings
from libs.common.ids import new_id
from libs.common.logging import get_logger
from libs.common.runtime import Runtime
from proto.alerts import Alert
from proto.control import RESPONDERS, Control, ControlAck
from proto.execution import OrderEvent, PositionSnapshot
from proto.orders import RiskState
from proto.units import SECOND_NS
from services.alerts.commands import ChatMessage, Mute, OperatorCommands, Reaction, acks_reply
from services.alerts.telegram import MAX_TEXT, guard_token, mask_tokens, read_token

log = get_logger(__name__)
POLL_S = 25  # getUpdates long poll: a command is read the moment it is sent
ANSWER_WAIT_S = 10.0  # how long a command waits for its responders' acks before saying so
POLL_BACKOFF_MAX_S = 30.0
STOP_CONFIRM_S = 3.0  # what a stopping service gives Telegram to learn which updates were handled


class CommandDesk:
    """Telegram commands: polls the bot's updates, has OperatorCommands decide, and does what it
    says (reply, publish a Control and report its acks, mute, audit a refusal)."""

    def __init__(self, settings: TelegramSettings, token: str, mute: Callable[[Mute], None]) -> None:
        self.settings = settings
        self.token = token
        self.mute = mute
        self.commands = OperatorCommands(settings.chat_ids, LiveClock())
        self.bot = _command_bot(settings, token)
        self._awaited: dict[str, Awaited] = {}  # command id -> its answers so far
        self._tasks: set[asyncio.Task[None]] = set()
        self._offset: int | None = None  # the next update to read; those before it are handled

    @classmethod
    def configured(cls, settings: TelegramSettings, mute: Callable[[Mute], None]) -> CommandDesk | None:
        """A desk when Telegram has a readable token and chats to obey; else none."""
        token, problem = read_token(settings)
        if not token or problem or not settings.chat_ids:
            return None
        guard_token(token)
        return cls(settings, token, mute)

    async def start(self, rt: Runtime) -> None:
        self.rt = rt
        self.commands.clock = rt.clock
        c = self.commands
        await rt.subscribe("risk.state", lambda d: _fed(c.on_risk_state, d), types=RiskState)
        await rt.subscribe("exec.position", lambda d: _fed(c.on_positions, d), types=PositionSnapshot)
        await rt.subscribe("exec.order.*", lambda d: _fed(c.on_order, d), types=OrderEvent)
        await rt.subscribe("ack.*", self._on_ack, types=ControlAck)
        # What was said before this start, unless something newer came in meanwhile.
        if c.risk_state is None and (state := await rt.last("risk.state", RiskState)):
            c.on_risk_state(state[0])
        if c.positions is None and (snapshot := await rt.last("exec.position", PositionSnapshot)):
            c.on_positions(snapshot[0])
        self._spawn(self._poll(), "alerts-telegram-commands")

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._offset is not None:
            # Confirm what was handled, or the next start would obey the same commands again.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.bot.get_updates(offset=self._offset, timeout=0), STOP_CONFIRM_S)
        with contextlib.suppress(Exception):
            await self.bot.shutdown()

    def status(self) -> dict[str, Any]:
        stats = self.commands.stats
        return {"commands_obeyed": stats["commands_obeyed"], "commands_refused": stats["commands_refused"]}

    def _spawn(self, work: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _poll(self) -> None:
        """Long-poll getUpdates; an update is confirmed (the next call's offset) once handled."""
        backoff = 1.0
        while True:
            try:
                await self.bot.initialize()  # getMe once; a no-op afterwards
                updates = await self.bot.get_updates(
                    offset=self._offset, timeout=POLL_S, allowed_updates=["message"]
                )
            except InvalidToken:
                log.error("telegram commands off: the bot token is refused")
                return
            except Exception as exc:  # the server down, a timeout, a 409: try again later
                hint = " (another poller of this bot, or a webhook set?)" if isinstance(exc, Conflict) else ""
                log.warning("telegram getUpdates failed" + hint, error=self._masked(exc), retry_in_s=backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, POLL_BACKOFF_MAX_S)
                continue
            backoff = 1.0
            for update in updates:
                self._offset = update.update_id + 1
                if update.message is not None and (message := _chat_message(update.message)) is not None:
                    await self._handle(message)

    async def _handle(self, m: ChatMessage) -> None:
        try:
            reaction = self.commands.on_message(m)
            if reaction.command:
                log.info("telegram command", command=reaction.command, operator=m.operator)
            if reaction.refused:
                await self._audit(m, reaction)
            if reaction.mute is not None:
                self.mute(reaction.mute)
            if reaction.reply:
                await self._reply(m.chat_id, reaction.reply)
            if reaction.control is not None:
                self._spawn(self._send(m.chat_id, reaction.control), f"ctl-{reaction.control.command_id}")
        except Exception:  # one bad message must not stop the desk
            log.exception("telegram command failed", chat_id=m.chat_id)

    async def _send(self, chat_id: int, control: Control) -> None:
        """Publish, wait for every responder's ack (listening since start: none is missed), and
        tell the chat what each said, or that it said nothing."""
        awaited = self._awaited[control.command_id] = Awaited(frozenset(RESPONDERS[control.command]))
        try:
            await self.rt.emit(control)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(awaited.all_in.wait(), ANSWER_WAIT_S)
        except Exception as exc:
            log.error("control not published", command=control.command, error=repr(exc))
            await self._reply(chat_id, f"{control.command} NOT sent: the bus refused it ({exc!r})")
            return
        finally:
            self._awaited.pop(control.command_id, None)
        await self._reply(chat_id, acks_reply(control, awaited.acks, ANSWER_WAIT_S))

    async def _on_ack(self, d: Delivery[ControlAck]) -> None:
        if (awaited := self._awaited.get(d.event.command_id)) is not None:
            awaited.take(d.event)

    async def _audit(self, m: ChatMessage, reaction: Reaction) -> None:
        """A refused command is logged and raised as an alert (stored in ALERTS, sent to the
        allowed chats). One dedupe key per chat: a chat hammering the bot folds into one message."""
        who = m.username or str(m.user_id)
        log.warning(
            "telegram command refused", command=reaction.command, operator=m.operator, why=reaction.refused
        )
        now = self.rt.now_ns()
        await self.rt.emit(
            Alert(
                ts_event=now,
                ts_init=now,
                alert_id=f"refused-{new_id()}",
                severity="warning",
                source="alerts",
                title=f"refused {reaction.command} from chat {m.chat_id} (user {who}): not allow-listed",
                body=f"{m.text[:200]!r} from {m.operator}: {reaction.refused}",
                dedupe=f"alerts:refused:{m.chat_id}",
                labels={"chat_id": str(m.chat_id), "user": who, "command": reaction.command},
            )
        )

    async def _reply(self, chat_id: int, text: str) -> None:
        try:
            await self.bot.send_message(chat_id, text[:MAX_TEXT])
        except TelegramError as exc:
            log.warning("telegram reply not sent", chat_id=chat_id, error=self._masked(exc))

    def _masked(self, exc: Exception) -> str:
        return mask_tokens(f"{type(exc).__name__}: {exc}", {self.token})


async def _fed(feed: Callable[[Any], None], d: Delivery[Any]) -> None:
    feed(d.event)


def _chat_message(message: TelegramMessage) -> ChatMessage | None:
    """A text message from a person; None for anything else (photos, channel posts)."""
    if not message.text or message.from_user is None:
        return None
    return ChatMessage(
        chat_id=message.chat_id,
        user_id=message.from_user.id,
        username=message.from_user.username or "",
        text=message.text,
        sent_ns=int(message.date.timestamp()) * SECOND_NS,
    )


def _command_bot(settings: TelegramSettings, token: str) -> Bot:
    """A bot of its own: its long poll holds a connection the sink's messages must not wait on."""

    def request() -> HTTPXRequest:
        t = settings.timeout_s
        return HTTPXRequest(
            connection_pool_size=2, connect_timeout=t, read_timeout=t, write_timeout=t, pool_timeout=t
        )

    api = settings.api_url
    return Bot(
        token,
        base_url=f"{api}/bot",
        base_file_url=f"{api}/file/bot",
        request=request(),
        get_updates_request=request(),  # read timeout: this plus the long poll
    )
