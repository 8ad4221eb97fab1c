"""Operations guards (issue 12, item 6): one `meal-edge run` per store; a damaged store is refused at start
and left as it was. Real processes, real SQLite files."""

from __future__ import annotations

import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edge.config import DEFAULT_CONFIG
from edge.security.guards import StoreLock
from edge.store import Store, StoreError


def _config(tmp_path: Path) -> Path:
    """The default config with the store under tmp_path, no broker, no screen, and a camera that is not there
    (the daemon keeps retrying it, as it does when a camera is unplugged)."""
    text = DEFAULT_CONFIG.replace('[store]\npath = ""', '[store]\npath = "state/meal-edge.sqlite"')
    text = text.replace("[mqtt]\nenabled = true", "[mqtt]\nenabled = false")
    text = text.replace('source = "0"', 'source = "/dev/video-none"')
    out, section = [], ""
    for line in text.splitlines():
        if line.startswith("["):
            section = line.strip()
        if section == "[display]" and line.split("=")[0].strip() == "enabled":
            line = "enabled = false"
        out.append(line)
    text = "\n".join(out) + "\n"
    assert "[mqtt]\nenabled = false" in text and 'source = "/dev/video-none"' in text
    assert 'path = "state/meal-edge.sqlite"' in text
    p = tmp_path / "meal-edge.toml"
    p.write_text(text, encoding="utf-8")
    return p


def _meal_edge(*argv: str) -> list[str]:
    return [sys.executable, "-m", "edge", *argv]


@pytest.mark.slow
def test_a_second_run_on_the_same_store_exits_at_once_naming_the_first(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    assert subprocess.run(_meal_edge("--config", str(cfg), "keys", "init"), capture_output=True).returncode == 0
    lock = tmp_path / "state" / "meal-edge.sqlite.lock"
    first = subprocess.Popen(
        _meal_edge("--config", str(cfg), "run"), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 60
        while not (lock.exists() and lock.read_text().strip() == str(first.pid)):
            assert first.poll() is None, first.stderr.read() if first.stderr else ""
            assert time.monotonic() < deadline, "the first run never took the lock"
            time.sleep(0.2)
        t0 = time.monotonic()
        second = subprocess.run(_meal_edge("--config", str(cfg), "run"), capture_output=True, text=True, timeout=60)
        took = time.monotonic() - t0
        assert second.returncode == 1, second.stderr
        assert f"already in use by another `meal-edge run` (pid {first.pid})" in second.stderr
        assert "Traceback" not in second.stderr
        # at once: before the camera, the models or the broker (the bound only allows for a busy machine's
        # Python start-up and imports; the second run never reached the camera)
        assert took < 60 and "camera" not in second.stderr
        assert first.poll() is None  # the first one runs on
    finally:
        first.send_signal(signal.SIGTERM)
        first.wait(30)
    # the first one ended, however it ended: the store is free again (the kernel drops the lock)
    StoreLock(tmp_path / "state" / "meal-edge.sqlite").acquire().release()


def _corrupt_a_btree_page(path: Path) -> int:
    """Overwrite the cell area of one interior leaf page of the meal_events table (never page 1, so the
    schema still reads): the kind of damage a bad SD card or a torn write leaves. Returns the page number."""
    con = sqlite3.connect(path)
    page_size = con.execute("PRAGMA page_size").fetchone()[0]
    root = con.execute("SELECT rootpage FROM sqlite_master WHERE name='meal_events'").fetchone()[0]
    # a page of the table below its root (dbstat is not always compiled in: find one by walking the file)
    con.close()
    data = bytearray(path.read_bytes())
    n_pages = len(data) // page_size
    victim = None
    for pno in range(root + 1, n_pages + 1):
        kind = data[(pno - 1) * page_size]
        if kind == 13:  # a table leaf page
            victim = pno
            break
    assert victim is not None, "no leaf page to damage"
    off = (victim - 1) * page_size
    data[off + 1 : off + 200] = bytes((i * 37 + 11) % 256 for i in range(199))
    path.write_bytes(bytes(data))
    return victim


def test_a_damaged_store_is_refused_at_start_and_kept(tmp_path: Path) -> None:
    from conftest import meal_event

    path = tmp_path / "meal.sqlite"
    with Store(path) as s:
        for i in range(300):  # enough meal events for the table to span several pages
            s.record_meal(meal_event(senior_id=f"S{i:04d}"), "meal/v1/x/c/k/events")
    con = sqlite3.connect(path)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    page = _corrupt_a_btree_page(path)
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    # the damage is real, and opening the file alone does not notice it: only a check does
    con = sqlite3.connect(path)
    assert con.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] > 0
    with pytest.raises(sqlite3.DatabaseError):
        rows = con.execute("PRAGMA quick_check").fetchall()
        assert rows != [("ok",)]
        raise sqlite3.DatabaseError(rows[0][0])
    con.close()
    with pytest.raises(StoreError, match=r"damaged.*kept as it is.*backup") as e:
        Store(path)
    assert str(path) in str(e.value)
    assert path.exists() and hashlib.sha256(path.read_bytes()).hexdigest() == before
    assert page > 1
    assert os.path.getsize(path) > 0
