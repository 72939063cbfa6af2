"""`tradefleet up` supervises: a dead service is restarted with a doubling backoff, as it was
first started; a crash loop ends the run with an alert and the reason."""

from __future__ import annotations

from pathlib import Path

from libs.common.config import Settings
from tradefleet.fleet import CRASH_LOOP_LIMIT, CRASH_WINDOW_S, Fleet


class DeadProcess:
    """A child that has exited with ``code``."""

    def __init__(self, code: int | None) -> None:
        self.returncode = code
        self.pid = 4242

    def poll(self) -> int | None:
        return self.returncode


class Supervised(Fleet):
    """The real supervision with the process table, the spawns and the alert recorded."""

    def __init__(self, tmp: Path) -> None:
        super().__init__(Settings(), None, tmp, live_table=False)
        self.spawned: list[str] = []
        self.alerts_raised: list[tuple[str, str]] = []
        self.procs = {"risk": DeadProcess(None), "tca": DeadProcess(None)}  # type: ignore[dict-item]

    def _spawn(self, name: str) -> None:
        self.spawned.append(name)
        self.procs[name] = DeadProcess(None)  # type: ignore[assignment]

    def _alert(self, title: str, detail: str) -> None:
        self.alerts_raised.append((title, detail))

    def _write_state(self) -> None:
        pass

    def kill(self, name: str, code: int = -9) -> None:
        self.procs[name] = DeadProcess(code)  # type: ignore[assignment]


def test_a_dead_service_is_restarted_after_a_doubling_backoff(tmp_path: Path) -> None:
    fleet = Supervised(tmp_path)
    fleet.kill("tca")
    assert fleet._supervise(now=100.0) is None and fleet.spawned == []  # not at once
    assert fleet._supervise(now=100.4) is None and fleet.spawned == []
    assert fleet._supervise(now=100.5) is None and fleet.spawned == ["tca"]
    fleet.kill("tca")
    fleet._supervise(now=101.0)
    fleet._supervise(now=101.9)
    assert fleet.spawned == ["tca"]  # the second death in the window waits twice as long
    fleet._supervise(now=102.0)
    assert fleet.spawned == ["tca", "tca"] and fleet.restarts["tca"] == 2 and fleet.exits["tca"] == [-9, -9]
    assert fleet.alerts_raised == [] and "risk" not in fleet.restarts  # the others untouched


def test_deaths_outside_the_window_are_forgotten(tmp_path: Path) -> None:
    fleet = Supervised(tmp_path)
    now = 0.0
    for _ in range(CRASH_LOOP_LIMIT * 3):
        fleet.kill("risk", 1)
        assert fleet._supervise(now=now) is None
        now += CRASH_WINDOW_S / CRASH_LOOP_LIMIT + 1  # never more than the limit in a window
        fleet._supervise(now=now)
    assert fleet.restarts["risk"] == CRASH_LOOP_LIMIT * 3 and fleet.alerts_raised == []


def test_a_crash_loop_ends_the_run_with_an_alert(tmp_path: Path) -> None:
    fleet = Supervised(tmp_path)
    now, why = 0.0, None
    for _ in range(CRASH_LOOP_LIMIT + 1):
        fleet.kill("risk", 3)
        why = fleet._supervise(now=now)
        now += 10.0
        if why is None:
            fleet._supervise(now=now)  # the restart
    assert fleet.restarts["risk"] == CRASH_LOOP_LIMIT
    assert why is not None and why.startswith(
        f"risk is crash-looping: it exited {CRASH_LOOP_LIMIT + 1} times"
    )
    assert "(last with 3)" in why and "risk.log" in why
    assert fleet.alerts_raised == [("risk crash-looping: the fleet stops", why)]
