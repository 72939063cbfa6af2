"""A fake Telegram Bot API server: enough of its HTTP/JSON for python-telegram-bot.

It serves ``/bot<TOKEN>/<method>`` on 127.0.0.1 (a free port) for getMe, sendMessage, getUpdates,
deleteWebhook and setMyCommands, with the real server's error replies: a wrong token is 401, a
chat outside ``chats`` is 400 "chat not found", and ``down()`` makes every call a 503 until ``up()``.
``sent`` holds what sendMessage delivered; ``push_message`` queues a user's message for getUpdates.

Use it in a test's loop (``async with FakeBotApi(token) as api:`` then ``api.url``) or on a thread
of its own (``url, stop = api.run_in_thread()``) when the test blocks its main thread, waiting on
services run as subprocesses. The controls are safe to call from either thread.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any

from aiohttp import web

BOT_USER = {
    "id": 4242,
    "is_bot": True,
    "first_name": "tradefleet",
    "username": "tradefleet_bot",
    "can_join_groups": False,
    "can_read_all_group_messages": False,
    "supports_inline_queries": False,
}
LONG_POLL_CAP_S = 5.0  # a getUpdates never holds a request longer, whatever timeout it asks


def failure(status: int, description: str) -> web.Response:
    return web.json_response({"ok": False, "error_code": status, "description": description}, status=status)


def success(result: Any) -> web.Response:
    return web.json_response({"ok": True, "result": result})


class FakeBotApi:
    def __init__(self, token: str, chats: Iterable[int] | None = None) -> None:
        self.token = token
        self.chats = None if chats is None else set(chats)  # None: every chat exists
        self.sent: list[tuple[int, str]] = []  # (chat id, text) per message delivered
        self.calls: list[str] = []  # the Bot API methods asked, in order, answered or not
        self.sent_params: list[dict[str, str]] = []  # every parameter of each message in ``sent``
        self.commands: list[dict[str, Any]] = []  # the last setMyCommands
        self.url = ""
        self._lock = threading.Lock()
        self._down = False
        self._sends_until_down: int | None = None
        self._updates: list[dict[str, Any]] = []
        self._next_update_id = 1
        self._next_message_id = 1
        self._runner: web.AppRunner | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._news: asyncio.Event | None = None  # set when updates are queued or the server stops
        self._stopping = False

    # -- controls -------------------------------------------------------------------------------

    def down(self, after_sends: int = 0) -> None:
        """Answer 503 to everything, now or once ``after_sends`` more messages went through."""
        with self._lock:
            if after_sends:
                self._sends_until_down = after_sends
            else:
                self._down = True

    def up(self) -> None:
        with self._lock:
            self._down = False
            self._sends_until_down = None

    def push_message(self, chat_id: int, text: str, from_id: int | None = None) -> int:
        """Queue a user's message (a command when it starts with "/") for getUpdates; its update id."""
        with self._lock:
            update_id = self._next_update_id
            self._next_update_id += 1
            message = self._message(chat_id, text, sender={"id": from_id or chat_id, "is_bot": False})
            message["from"]["first_name"] = "tester"
            if text.startswith("/"):
                command = text.split(maxsplit=1)[0]
                message["entities"] = [{"type": "bot_command", "offset": 0, "length": len(command)}]
            self._updates.append({"update_id": update_id, "message": message})
        self._wake()
        return update_id

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> str:
        app = web.Application()
        app.router.add_route("*", "/bot{token}/{method}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self._loop = asyncio.get_running_loop()
        self._news = asyncio.Event()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"
        return self.url

    async def stop(self) -> None:
        self._stopping = True
        if self._news is not None:
            self._news.set()  # releases long polls, which cleanup would otherwise wait out
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeBotApi:
        await self.start()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    def run_in_thread(self) -> tuple[str, Callable[[], None]]:
        """Serve from an event loop on a daemon thread; the URL and the function that stops it."""
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="fake-bot-api", daemon=True)
        thread.start()
        url = asyncio.run_coroutine_threadsafe(self.start(), loop).result(timeout=10)

        def stop() -> None:
            asyncio.run_coroutine_threadsafe(self.stop(), loop).result(timeout=10)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=10)
            loop.close()

        return url, stop

    # -- the Bot API ----------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        self.calls.append(method)
        if self._down:
            return failure(503, "Service Unavailable")
        if request.match_info["token"] != self.token:
            return failure(401, "Unauthorized")
        params = await self._params(request)
        match method.lower():
            case "getme":
                return success(BOT_USER)
            case "sendmessage":
                return self._send_message(params)
            case "getupdates":
                return success(await self._get_updates(params))
            case "setmycommands":
                self.commands = json.loads(params.get("commands", "[]"))
                return success(True)
            case "deletewebhook":
                return success(True)
        return failure(404, "Not Found")

    @staticmethod
    async def _params(request: web.Request) -> dict[str, str]:
        """The call's parameters, as the Bot API takes them: query, form or JSON body."""
        params = dict(request.query)
        if request.content_type == "application/json":
            body = await request.json()
            params.update({k: v if isinstance(v, str) else json.dumps(v) for k, v in body.items()})
        elif request.can_read_body:
            params.update({k: v for k, v in (await request.post()).items() if isinstance(v, str)})
        return params

    def _send_message(self, params: dict[str, str]) -> web.Response:
        chat_id = int(params["chat_id"])
        if self.chats is not None and chat_id not in self.chats:
            return failure(400, "Bad Request: chat not found")
        with self._lock:
            text = params["text"]
            self.sent.append((chat_id, text))
            self.sent_params.append(params)
            if self._sends_until_down is not None:
                self._sends_until_down -= 1
                if self._sends_until_down <= 0:
                    self._down, self._sends_until_down = True, None
            return success(self._message(chat_id, text, sender=BOT_USER))

    async def _get_updates(self, params: dict[str, str]) -> list[dict[str, Any]]:
        """Updates from ``offset`` on (those before it are confirmed and dropped); when there are
        none, waits up to ``timeout`` seconds for one, as the real long poll does."""
        offset, limit = int(params.get("offset", 0)), int(params.get("limit", 100))
        deadline = time.monotonic() + min(float(params.get("timeout", 0)), LONG_POLL_CAP_S)
        assert self._news is not None
        while True:
            self._news.clear()
            with self._lock:
                self._updates = [u for u in self._updates if u["update_id"] >= offset]
                pending = self._updates[:limit]
            left = deadline - time.monotonic()
            if pending or left <= 0 or self._stopping:
                return pending
            try:
                await asyncio.wait_for(self._news.wait(), left)
            except TimeoutError:
                return []

    def _message(self, chat_id: int, text: str, sender: dict[str, Any]) -> dict[str, Any]:
        message_id = self._next_message_id
        self._next_message_id += 1
        return {
            "message_id": message_id,
            "date": int(time.time()),
            "chat": {"id": chat_id, "type": "private" if chat_id > 0 else "group"},
            "from": dict(sender),
            "text": text,
        }

    def _wake(self) -> None:
        """Tell waiting long polls, from whichever thread the test calls in."""
        if self._loop is not None and self._news is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._news.set)
