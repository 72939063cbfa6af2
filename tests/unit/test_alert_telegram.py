"""The Telegram sink against a fake Bot API server: what each chat gets, which failures are worth a
retry (SinkError) and which are not (PermanentSinkError), no chat twice, and a token that never
shows in a log or an error."""

from __future__ import annotations

import asyncio
import json
import logging
import traceback
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import structlog
from telegram import Bot

from libs.common.config import TelegramSettings
from services.alerts.sinks import Message, PermanentSinkError, SinkError
from services.alerts.telegram import TOKEN_MASK, TelegramSink
from tests.helpers import await_until
from tests.kit.fake_telegram import FakeBotApi

TOKEN = "123456:AAE-the-real-token_for-tests"
OPS, ONCALL, NOWHERE = 1111, -2222, 3333  # NOWHERE: a chat the server does not know

MESSAGE = Message(
    key="fastlane:quarantine:60m",
    severity="critical",
    source="fastlane",
    title="model 60m quarantined",
    body="drift <3 sigma> for *5* bars",  # markup characters arrive as they are
    labels={"model": "60m"},
    last_ns=1_700_000_000_000_000_000,
)


@pytest.fixture
async def api() -> AsyncIterator[FakeBotApi]:
    async with FakeBotApi(TOKEN, chats={OPS, ONCALL}) as fake:
        yield fake


@pytest.fixture
async def make_sink(api: FakeBotApi) -> AsyncIterator[Callable[..., TelegramSink]]:
    """A sink on the fake (token and both chats unless told otherwise), closed after the test."""
    sinks: list[TelegramSink] = []

    def make(**settings: Any) -> TelegramSink:
        values: dict[str, Any] = {"api_url": api.url, "token": TOKEN, "chat_ids": [OPS, ONCALL]}
        sinks.append(TelegramSink(TelegramSettings(**(values | settings))))
        return sinks[-1]

    yield make
    for sink in sinks:
        await sink.close()


async def test_each_chat_gets_the_alert_as_plain_text(
    api: FakeBotApi, make_sink: Callable[..., TelegramSink]
) -> None:
    await make_sink().send(MESSAGE)
    assert api.sent == [(OPS, MESSAGE.text()), (ONCALL, MESSAGE.text())]
    assert api.calls == ["getMe", "sendMessage", "sendMessage"]
    for params in api.sent_params:  # no parse_mode: alert text can never break the formatting
        assert params.keys() == {"chat_id", "text", "link_preview_options"}
        assert json.loads(params["link_preview_options"]) == {"is_disabled": True}


async def test_a_folded_burst_says_how_many(api: FakeBotApi, make_sink: Callable[..., TelegramSink]) -> None:
    burst = Message(key="k", severity="warning", source="qos", title="stale feed", count=37, window_s=300)
    await make_sink(chat_ids=[OPS]).send(burst)
    assert api.sent == [(OPS, "[WARNING] qos: stale feed (x37 in 5 min)")]


async def test_a_wrong_token_is_permanent(api: FakeBotApi, make_sink: Callable[..., TelegramSink]) -> None:
    with pytest.raises(PermanentSinkError, match="InvalidToken"):
        await make_sink(token="123456:wrong").send(MESSAGE)
    assert api.sent == []


async def test_an_unknown_chat_is_permanent_and_the_others_still_get_it(
    api: FakeBotApi, make_sink: Callable[..., TelegramSink]
) -> None:
    with pytest.raises(PermanentSinkError, match=f"chat {NOWHERE}: BadRequest: Chat not found"):
        await make_sink(chat_ids=[OPS, NOWHERE, ONCALL]).send(MESSAGE)
    assert api.sent == [(OPS, MESSAGE.text()), (ONCALL, MESSAGE.text())]


async def test_a_server_down_is_temporary(api: FakeBotApi, make_sink: Callable[..., TelegramSink]) -> None:
    sink = make_sink()
    api.down()
    with pytest.raises(SinkError) as info:
        await sink.send(MESSAGE)
    assert not isinstance(info.value, PermanentSinkError)
    api.up()
    await sink.send(MESSAGE)
    assert api.sent == [(OPS, MESSAGE.text()), (ONCALL, MESSAGE.text())]


async def test_a_retry_goes_only_to_the_chats_that_missed_it(
    api: FakeBotApi, make_sink: Callable[..., TelegramSink]
) -> None:
    sink = make_sink()
    api.down(after_sends=1)  # OPS gets it, then the server fails ONCALL's
    with pytest.raises(SinkError) as info:
        await sink.send(MESSAGE)
    assert not isinstance(info.value, PermanentSinkError)
    assert api.sent == [(OPS, MESSAGE.text())]
    api.up()
    await sink.send(MESSAGE)
    assert api.sent == [(OPS, MESSAGE.text()), (ONCALL, MESSAGE.text())]


async def test_the_token_may_come_from_a_file(
    api: FakeBotApi, make_sink: Callable[..., TelegramSink], tmp_path: Path
) -> None:
    secret = tmp_path / "telegram-token"
    secret.write_text(f"  {TOKEN}\n")
    sink = make_sink(token="", token_file=secret)
    assert sink.enabled
    await sink.send(MESSAGE)
    assert [chat for chat, _ in api.sent] == [OPS, ONCALL]


async def test_an_unreadable_token_file_is_reported_not_silently_off(
    make_sink: Callable[..., TelegramSink], tmp_path: Path
) -> None:
    sink = make_sink(token="", token_file=tmp_path / "missing")
    assert sink.enabled and sink.problem and "missing" in sink.problem
    with pytest.raises(PermanentSinkError, match="cannot read telegram token_file"):
        await sink.send(MESSAGE)


def test_off_without_a_token_or_chats() -> None:
    assert not TelegramSink(TelegramSettings()).enabled
    assert not TelegramSink(TelegramSettings(token=TOKEN)).enabled
    assert not TelegramSink(TelegramSettings(chat_ids=[OPS])).enabled


async def test_the_token_never_shows_in_logs_or_errors(
    api: FakeBotApi,
    make_sink: Callable[..., TelegramSink],
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)  # python-telegram-bot's and httpx's loggers print request URLs
    wrong = "654321:AAE-a-wrong-token"
    errors: list[str] = []
    with structlog.testing.capture_logs() as events:
        await make_sink().send(MESSAGE)
        for failing, token in ((api.down, TOKEN), (api.up, wrong)):
            failing()
            with pytest.raises(SinkError) as info:
                await make_sink(token=token).send(MESSAGE)
            errors += traceback.format_exception(info.value)
    printed = capsys.readouterr()
    everything = "\n".join([caplog.text, repr(events), *errors, printed.out, printed.err])
    assert TOKEN_MASK in caplog.text  # the URLs were logged, so the check below means something
    assert TOKEN not in everything and wrong not in everything


async def test_the_fake_queues_user_messages_as_updates(api: FakeBotApi) -> None:
    async with Bot(TOKEN, base_url=f"{api.url}/bot") as bot:
        first = api.push_message(OPS, "/status now")
        (update,) = await bot.get_updates()
        message = update.message
        assert update.update_id == first and message is not None and message.from_user is not None
        assert (message.chat.id, message.from_user.id, message.text) == (OPS, OPS, "/status now")
        assert [entity.type for entity in message.entities] == ["bot_command"]
        # The next poll confirms the first; a long poll returns as soon as a message comes.
        polls = api.calls.count("getUpdates")
        poll = asyncio.create_task(bot.get_updates(offset=first + 1, timeout=5))
        await await_until(lambda: api.calls.count("getUpdates") > polls, what="the poll at the server")
        second = api.push_message(ONCALL, "hello", from_id=OPS)
        assert [u.update_id for u in await poll] == [second]
        assert await bot.get_updates(offset=second + 1) == ()
        assert await bot.set_my_commands([("status", "fleet status")])
        assert api.commands == [{"command": "status", "description": "fleet status"}]


async def test_the_fake_serves_from_its_own_thread(make_sink: Callable[..., TelegramSink]) -> None:
    threaded = FakeBotApi(TOKEN)
    url, stop = threaded.run_in_thread()
    try:
        await make_sink(api_url=url).send(MESSAGE)
    finally:
        stop()
    assert threaded.sent == [(OPS, MESSAGE.text()), (ONCALL, MESSAGE.text())]
