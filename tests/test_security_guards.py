"""edge.security.guards and edge.security.atrest on their own: real PNG headers, real files, real flock."""

from __future__ import annotations

import io
import logging
import os
import stat
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edge.security import atrest
from edge.security.guards import (
    ImageTooLarge,
    PathOutside,
    StoreInUse,
    StoreLock,
    Throttle,
    check_pixels,
    confine,
    image_size,
)


def bomb_png(width: int, height: int) -> bytes:
    """A real, valid greyscale PNG of width x height black pixels, written row by row (never held in memory):
    20000 x 20000 compresses to about 0.4 MB."""
    import struct

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    comp = zlib.compressobj(9)
    row = b"\x00" * (width + 1)  # filter byte + one byte per pixel
    parts = [comp.compress(row) for _ in range(height)]
    parts.append(comp.flush())
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"".join(parts)) + chunk(b"IEND", b"")


def test_a_bomb_is_refused_from_its_header_and_a_photo_passes():
    data = bomb_png(20000, 20000)
    assert len(data) < 2_000_000
    assert image_size(data) == (20000, 20000)
    with pytest.raises(ImageTooLarge, match="20000x20000 pixels"):
        check_pixels(data, "bomb.png")
    buf = io.BytesIO()
    Image.fromarray(np.zeros((480, 640, 3), np.uint8)).save(buf, "JPEG")
    assert check_pixels(buf.getvalue(), "ok.jpg") == (640, 480)
    # the limit is the limit: one pixel more is refused
    assert check_pixels(buf.getvalue(), "ok.jpg", max_pixels=640 * 480) == (640, 480)
    with pytest.raises(ImageTooLarge):
        check_pixels(buf.getvalue(), "ok.jpg", max_pixels=640 * 480 - 1)
    # Pillow's own bomb limit is left as it was
    assert Image.MAX_IMAGE_PIXELS is not None


def test_confine_keeps_paths_inside_and_resolves_links(tmp_path: Path):
    inside = tmp_path / "roster"
    inside.mkdir()
    (inside / "a.jpg").write_bytes(b"x")
    outside = tmp_path / "secret.jpg"
    outside.write_bytes(b"y")
    assert confine(inside / "a.jpg", [inside]) == (inside / "a.jpg").resolve()
    with pytest.raises(PathOutside, match="outside"):
        confine(inside / ".." / "secret.jpg", [inside])
    with pytest.raises(PathOutside):
        confine(outside, [inside])
    (inside / "link.jpg").symlink_to(outside)
    with pytest.raises(PathOutside):
        confine(inside / "link.jpg", [inside])
    # a second allowed root
    assert confine(outside, [inside, tmp_path]) == outside.resolve()


def test_store_lock_refuses_a_second_process_and_names_the_pid(tmp_path: Path):
    db = tmp_path / "s.sqlite"
    with StoreLock(db):
        lock_file = Path(str(db) + ".lock")
        assert stat.S_IMODE(lock_file.stat().st_mode) == 0o600
        assert lock_file.read_text().strip() == str(os.getpid())
        code = textwrap.dedent(
            f"""
            from pathlib import Path
            from edge.security.guards import StoreLock, StoreInUse
            try:
                StoreLock(Path({str(db)!r})).acquire()
            except StoreInUse as e:
                print(e)
                raise SystemExit(1)
            """
        )
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
        assert r.returncode == 1, r.stderr
        assert f"pid {os.getpid()}" in r.stdout and "already in use" in r.stdout
        # the same process cannot take it twice either (flock is per open file)
        with pytest.raises(StoreInUse):
            StoreLock(db).acquire()
    # released: free again
    StoreLock(db).acquire().release()


def test_throttle_logs_once_a_minute_per_key(caplog: pytest.LogCaptureFixture):
    t = [0.0]
    th = Throttle(60, clock=lambda: t[0])
    log = logging.getLogger("test.throttle")
    with caplog.at_level(logging.INFO, "test.throttle"):
        for _ in range(100):
            th.log(log, logging.WARNING, "abort", "client went away")
        th.log(log, logging.WARNING, "other", "other thing")
        t[0] = 61
        th.log(log, logging.WARNING, "abort", "client went away")
    lines = [r.getMessage() for r in caplog.records]
    again = "client went away (99 more like it in the last 60 s not logged)"
    assert lines == ["client went away", "other thing", again]
    assert all(r.exc_info is None for r in caplog.records)


# -- templates at rest ------------------------------------------------------------------------------------


def test_seal_open_round_trip_and_binding():
    c = atrest.TemplateCipher(os.urandom(32))
    plain = np.arange(128, dtype="<f4").tobytes()
    blob = c.seal(plain, "S1", 7)
    assert len(blob) == atrest.sealed_size(512) and plain not in blob
    assert c.open(blob, "S1", 7) == plain
    with pytest.raises(atrest.AtRestError):
        c.open(blob, "S2", 7)  # moved to another senior
    with pytest.raises(atrest.AtRestError):
        c.open(blob, "S1", 8)  # moved to another row
    with pytest.raises(atrest.AtRestError):
        c.open(blob, "S1", 7, kind="photo")
    flipped = bytearray(blob)
    flipped[20] ^= 1
    with pytest.raises(atrest.AtRestError):
        c.open(bytes(flipped), "S1", 7)
    with pytest.raises(atrest.AtRestError, match="not a sealed record"):
        c.open(plain, "S1", 7)
    with pytest.raises(atrest.AtRestError):
        atrest.TemplateCipher(os.urandom(32)).open(blob, "S1", 7)  # another key
    assert c.seal(plain, "S1", 7) != blob  # a fresh nonce each time


def test_key_file_is_created_0600_in_a_0700_folder_and_reused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    monkeypatch.setattr(os, "umask", os.umask)  # restored whatever happens
    old = os.umask(0o022)
    try:
        path = tmp_path / "state" / "template.key"
        key = atrest.load_or_create_key(path)
    finally:
        os.umask(old)
    assert len(key) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert atrest.load_or_create_key(path) == key
    assert not list(path.parent.glob(".*tmp"))
    # loosened by someone: tightened again on load
    path.chmod(0o644)
    assert atrest.load_key(path) == key
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_systemd_credential_wins_and_a_missing_key_is_not_invented(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    creds = tmp_path / "creds"
    creds.mkdir()
    key = os.urandom(32)
    (creds / atrest.CREDENTIAL_NAME).write_bytes(key)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    path = tmp_path / "template.key"
    assert atrest.load_or_create_key(path) == key
    assert not path.exists()  # nothing written beside the store when systemd holds the key
    (creds / atrest.CREDENTIAL_NAME).write_text(key.hex())
    assert atrest.load_key(path) == key
    (creds / atrest.CREDENTIAL_NAME).write_text("short")
    with pytest.raises(atrest.AtRestError, match="not a template key"):
        atrest.load_key(path)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY")
    with pytest.raises(atrest.AtRestError, match="missing"):
        atrest.load_key(path)
