"""The local NATS server the fleet and the tests start (libs/common/localinfra.py): a port taken
before the server binds it is said at once, not waited on, and a port of our choosing is picked
again."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from libs.common import localinfra
from libs.common.localinfra import start_nats


def test_a_taken_port_is_said_at_once(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))  # bound, not listening: nothing answers, the server cannot bind
        port = taken.getsockname()[1]
        with pytest.raises(RuntimeError, match=rf"exited at start \(port {port}: exit code"):
            start_nats(tmp_path / "js", port=port)


def test_a_chosen_port_taken_in_between_is_chosen_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        stolen = taken.getsockname()[1]
        picks = iter([stolen, localinfra.free_port(), localinfra.free_port(), localinfra.free_port()])
        monkeypatch.setattr(localinfra, "free_port", lambda: next(picks))
        server = start_nats(tmp_path / "js")  # the first pick is taken: the second serves
        try:
            assert server.url != f"nats://127.0.0.1:{stolen}" and server.process.poll() is None
        finally:
            server.stop()
