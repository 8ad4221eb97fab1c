"""The package layout (docs/architecture.md): imports flow one way, with no circles (scripts/check_imports.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "check_imports.py"


def run_check(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--root", str(root)], capture_output=True, text=True, timeout=60
    )


def test_the_checkout_has_no_import_circle_and_no_import_against_the_layers() -> None:
    r = run_check(REPO)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "no circles" in r.stdout


def write(root: Path, rel: str, text: str = "") -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_a_circle_through_a_deferred_import_is_found(tmp_path: Path) -> None:
    for pkg in ("edge", "edge/lab"):
        write(tmp_path, f"{pkg}/__init__.py")
    write(tmp_path, "edge/lab/calibrate.py", "from edge.lab.evaluate import rate\n")
    write(tmp_path, "edge/lab/evaluate.py", "def rate():\n    from edge.lab import calibrate\n")
    r = run_check(tmp_path)
    assert r.returncode == 1
    circle = "import circle: edge.lab.calibrate -> edge.lab.evaluate (line 1); edge.lab.evaluate -> edge.lab.calibrate"
    assert circle in r.stdout, r.stdout


def test_an_import_against_the_layer_order_is_found(tmp_path: Path) -> None:
    for pkg in ("edge", "edge/meals", "edge/store", "edge/delivery"):
        write(tmp_path, f"{pkg}/__init__.py")
    write(tmp_path, "edge/cli.py", "")
    # the store sits below the meals package: it may use the pure rules, not the confirmation flow
    write(tmp_path, "edge/meals/rules.py", "")
    write(tmp_path, "edge/meals/confirm.py", "")
    write(tmp_path, "edge/store/db.py", "from edge.meals.rules import Senior\nfrom edge.meals import confirm\n")
    # the event model is shared with the district server: it may not reach into the kiosk
    write(tmp_path, "edge/delivery/events.py", "from edge import cli\n")
    r = run_check(tmp_path)
    assert r.returncode == 1
    lines = r.stdout.splitlines()
    assert any(line.startswith("edge.store.db imports edge.meals.confirm (line 2)") for line in lines), lines
    assert not any("edge.meals.rules (line" in line for line in lines), lines
    assert any(line.startswith("edge.delivery.events imports edge.cli (line 1)") for line in lines), lines
    assert len(lines) == 2, lines


def test_a_module_outside_every_layer_is_named(tmp_path: Path) -> None:
    write(tmp_path, "edge/__init__.py")
    write(tmp_path, "edge/newthing/__init__.py")
    write(tmp_path, "edge/newthing/x.py")
    r = run_check(tmp_path)
    assert r.returncode == 1
    assert "edge.newthing: no layer" in r.stdout
    assert "edge.newthing.x: no layer" in r.stdout
