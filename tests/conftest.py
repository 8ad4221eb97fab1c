"""Shared pytest fixtures."""

from __future__ import annotations

# =================================================================================================
# MQTT broker fixtures (store-and-delivery helper): a real Mosquitto on a free loopback port.
# =================================================================================================
import getpass
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from edge.delivery.events import MealEvent, new_event_id


def _find_mosquitto() -> str | None:
    for cand in (shutil.which("mosquitto"), "/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"):
        if cand and os.access(cand, os.X_OK):
            return cand
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class MosquittoBroker:
    """A Mosquitto process with persistence in `workdir`, restartable on the same port.

    stop() is a clean SIGTERM (Mosquitto saves its persistent sessions), kill() a SIGKILL,
    pause()/resume() SIGSTOP/SIGCONT: the TCP connection stays up but nothing is acknowledged.
    """

    def __init__(self, exe: str, workdir: Path, port: int | None = None) -> None:
        self.exe = exe
        self.workdir = workdir
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.paused = False
        self.log_path = workdir / "mosquitto.log"
        self.conf = workdir / "mosquitto.conf"
        data = workdir / "data"
        data.mkdir(parents=True, exist_ok=True)
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            "persistence true\n"
            f"persistence_location {data}/\n"
            "autosave_interval 1\n"
            # when run as root Mosquitto would drop to the `mosquitto` user, who cannot write here
            f"user {getpass.getuser()}\n"
            "log_type all\n"
            "max_queued_messages 10000\n"
        )

    def start(self, timeout: float = 5.0) -> None:
        assert self.proc is None, "broker already running"
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen([self.exe, "-c", str(self.conf)], stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited with {self.proc.returncode}: {self.log_tail()}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"mosquitto did not accept connections on port {self.port}: {self.log_tail()}")

    def stop(self, timeout: float = 5.0) -> None:
        if self.proc is None:
            return
        self.resume()
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout)
        self.proc = None

    def kill(self) -> None:
        if self.proc is None:
            return
        self.proc.kill()
        self.proc.wait(5)
        self.proc = None
        self.paused = False

    def pause(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        if self.proc is not None and self.paused:
            os.kill(self.proc.pid, signal.SIGCONT)
        self.paused = False

    def restart(self) -> None:
        self.stop()
        self.start()

    def unacked(self, client_id: str) -> set[int]:
        """Message ids the broker has sent to client_id (QoS 1) without its PUBACK yet, read off the log
        (`log_type all`). A message in flight when the broker stops is sent again after the restart,
        so a test that counts deliveries waits for this to be empty before it stops the broker."""
        log = self.log_path.read_text(errors="replace")
        sent = {int(m) for m in re.findall(rf"Sending PUBLISH to {re.escape(client_id)} \(d\d, q1, r\d, m(\d+),", log)}
        acked = {int(m) for m in re.findall(rf"Received PUBACK from {re.escape(client_id)} \(Mid: (\d+),", log)}
        return sent - acked

    def log_tail(self, n: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"


@pytest.fixture(scope="session", autouse=True)
def state_folder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The default state folder (edge/paths.py) of this test session, also for the commands tests start: a
    test never writes into the user's ~/.local/state. The converted model is built there once per session."""
    folder = tmp_path_factory.mktemp("xdg-state")
    saved = {k: os.environ.get(k) for k in ("XDG_STATE_HOME", "STATE_DIRECTORY")}
    os.environ["XDG_STATE_HOME"] = str(folder)
    os.environ.pop("STATE_DIRECTORY", None)
    yield folder / "meal-edge"
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture
def mosquitto_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MosquittoBroker]:
    exe = _find_mosquitto()
    if exe is None:
        pytest.skip("mosquitto is not installed (apt-get install mosquitto): MQTT tests need a real broker")
    broker = MosquittoBroker(exe, tmp_path_factory.mktemp("mosquitto"))
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


# ============================== end of MQTT broker fixtures ======================================


# =================================================================================================
# Event factory shared by the store, schema, publish and confirmation tests.
# =================================================================================================
def meal_event(**overrides: object) -> MealEvent:
    """A valid subsidised lunch of senior S0001 at kiosk-1, 30 November 2026, 11:45 Shanghai time;
    any field can be overridden."""
    base = MealEvent(
        event_id=new_event_id(),
        kind="meal",
        centre_id="centre-001",
        district="xuhui",
        kiosk_id="kiosk-1",
        senior_id="S0001",
        meal="lunch",
        local_date=date(2026, 11, 30),
        decided_at=datetime(2026, 11, 30, 11, 45, tzinfo=ZoneInfo("Asia/Shanghai")),
        price_fen=1000,
        subsidy_fen=300,
        payable_fen=700,
        reasons=("subsidised",),
    )
    return replace(base, **overrides)  # type: ignore[arg-type]
