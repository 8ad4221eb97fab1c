"""The systemd unit verifies, and the sd_notify protocol speaks to a real datagram socket."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from edge.cli import sdnotify

ROOT = Path(__file__).resolve().parents[1]
UNIT = ROOT / "systemd" / "meal-edge.service"
SCREEN_UNIT = ROOT / "systemd" / "meal-edge-staff-screen.service"


def test_unit_has_the_required_settings() -> None:
    text = UNIT.read_text()
    for line in (
        "Type=notify",
        "WatchdogSec=",
        "Restart=on-failure",
        "StateDirectory=meal-edge",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "PrivateTmp=yes",
        "DevicePolicy=closed",
        "DeviceAllow=char-video4linux rw",
        "DynamicUser=yes",
    ):
        assert line in text, line


def test_staff_screen_unit_shares_the_daemons_user_and_store() -> None:
    daemon, screen = UNIT.read_text(), SCREEN_UNIT.read_text()
    for line in ("DynamicUser=yes", "User=meal-edge", "StateDirectory=meal-edge"):
        assert line in daemon and line in screen, line
    for line in ("NoNewPrivileges=yes", "ProtectSystem=strict", "PrivateDevices=yes", "Restart=on-failure"):
        assert line in screen, line
    # the page can pay subsidies: it must stay on this machine
    assert "staff-screen --listen 127.0.0.1:" in screen


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
@pytest.mark.parametrize("unit_file", [UNIT, SCREEN_UNIT], ids=lambda p: p.name)
def test_systemd_analyze_verify(tmp_path: Path, unit_file: Path) -> None:
    # Point ExecStart at this checkout's installed entry point so verify can check it exists.
    exe = Path(sys.executable).parent / "meal-edge"
    assert exe.exists(), "meal-edge is not installed in this environment (pip install -e .)"
    unit = tmp_path / unit_file.name
    unit.write_text(unit_file.read_text().replace("/opt/meal-edge/.venv/bin/meal-edge", str(exe)))
    r = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    problems = [ln for ln in (r.stdout + r.stderr).splitlines() if unit_file.name in ln]
    assert r.returncode == 0 and not problems, r.stdout + r.stderr


def _listen(tmp_path: Path) -> tuple[socket.socket, str]:
    path = str(tmp_path / "notify.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(path)
    s.settimeout(5)
    return s, path


def test_notify_sends_datagrams(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s, path = _listen(tmp_path)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    assert sdnotify.notify("READY=1")
    assert s.recv(4096) == b"READY=1"
    assert sdnotify.notify("WATCHDOG=1")
    assert s.recv(4096) == b"WATCHDOG=1"
    s.close()


def test_notify_without_systemd_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert sdnotify.notify("READY=1") is False


def test_watchdog_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert sdnotify.watchdog_interval() == 15.0
    monkeypatch.setenv("WATCHDOG_PID", "1")  # meant for another process
    assert sdnotify.watchdog_interval() is None
    monkeypatch.delenv("WATCHDOG_USEC")
    assert sdnotify.watchdog_interval() is None
