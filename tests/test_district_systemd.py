"""The district's systemd units: hardened, state in /var/lib/meal-district, and `systemd-analyze verify` clean."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
UNITS = [ROOT / "systemd" / "meal-district.service", ROOT / "systemd" / "meal-district-web.service"]


@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_unit_settings(unit: Path) -> None:
    text = unit.read_text()
    for line in ("DynamicUser=yes", "User=meal-district", "StateDirectory=meal-district", "Restart=on-failure",
                 "NoNewPrivileges=yes", "ProtectSystem=strict", "PrivateDevices=yes", "CapabilityBoundingSet=",
                 "--config /etc/meal-district/district.toml"):
        assert line in text, (unit.name, line)
    assert "password" not in text.split("ExecStart=", 1)[1].split("\n", 1)[0], "no secret on the command line"


def test_web_unit_listens_on_loopback_only() -> None:
    assert "web --listen 127.0.0.1:" in UNITS[1].read_text()


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_systemd_analyze_verify(tmp_path: Path, unit: Path) -> None:
    exe = Path(sys.executable).parent / "meal-district"
    assert exe.exists(), "meal-district is not installed in this environment (pip install -e .)"
    copy = tmp_path / unit.name
    copy.write_text(unit.read_text().replace("/opt/meal-edge/.venv/bin/meal-district", str(exe)))
    r = subprocess.run(["systemd-analyze", "verify", str(copy)], capture_output=True, text=True, timeout=60)
    problems = [ln for ln in (r.stdout + r.stderr).splitlines() if unit.name in ln]
    assert r.returncode == 0 and not problems, r.stdout + r.stderr
