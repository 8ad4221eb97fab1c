"""The kiosk camera's picture shared with the staff screen's enrolment page (edge/recognition/frameshare.py): the
daemon's writer and the staff screen's reader on real files."""

from __future__ import annotations

import stat
import threading
from pathlib import Path

import numpy as np

from edge.recognition import frameshare as fs


class Clock:
    def __init__(self, t: float = 1_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def picture(value: int, w: int = 320, h: int = 240) -> np.ndarray:
    img = np.full((h, w, 3), value, np.uint8)
    img[h // 4 : h // 2, w // 4 : w // 2] = 255 - value  # something a JPEG keeps
    return img


def test_nothing_is_written_without_a_request(tmp_path: Path) -> None:
    w = fs.FrameShareWriter(tmp_path, every=0.0)
    assert not w.offer(picture(10))
    assert list(tmp_path.iterdir()) == []
    assert fs.latest(tmp_path) is None


def test_a_request_shares_frames_privately_until_it_lapses(tmp_path: Path) -> None:
    clock = Clock()
    w = fs.FrameShareWriter(tmp_path, every=0.25, clock=clock)
    fs.request(tmp_path, seconds=20, clock=clock)
    assert w.offer(picture(40))
    path = fs.frame_path(tmp_path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # a face: the owner only
    assert stat.S_IMODE(fs.request_path(tmp_path).stat().st_mode) == 0o600
    got = fs.latest(tmp_path)  # the real clock: the file was just written
    assert got is not None
    rgb = got.rgb()
    assert rgb is not None and rgb.shape == (240, 320, 3) and abs(int(rgb[0, 0, 0]) - 40) <= 3
    # not more often than every 0.25 s
    clock.t += 0.1
    assert not w.offer(picture(41))
    clock.t += 0.2
    assert w.offer(picture(42))
    # no frame from the camera this time: nothing written, the last picture stays while requested
    clock.t += 0.3
    assert not w.offer(None) and path.exists()
    # the request lapses: the next offer deletes the picture and writes nothing
    clock.t += 20
    assert not w.offer(picture(43))
    assert not path.exists()
    assert [p.name for p in tmp_path.iterdir()] == [fs.REQUEST_NAME]  # no temporary file left behind


def test_cancel_and_stop_remove_the_picture(tmp_path: Path) -> None:
    w = fs.FrameShareWriter(tmp_path, every=0.0)
    fs.request(tmp_path)
    assert w.offer(picture(1))
    fs.cancel(tmp_path)
    assert list(tmp_path.iterdir()) == []
    assert not w.offer(picture(2))  # no request any more
    fs.request(tmp_path)
    assert w.offer(picture(3))
    w.close()  # the daemon stops
    assert not fs.frame_path(tmp_path).exists()


def test_a_request_far_ahead_or_unreadable_is_ignored(tmp_path: Path) -> None:
    clock = Clock()
    w = fs.FrameShareWriter(tmp_path, every=0.0, clock=clock)
    fs.request_path(tmp_path).write_text('{"until": %f}' % (clock.t + fs.MAX_REQUEST_S + 60))
    assert not w.offer(picture(5))
    fs.request_path(tmp_path).write_text("not json")
    assert not w.offer(picture(5))
    fs.request_path(tmp_path).write_text('{"until": "soon"}')
    assert not w.offer(picture(5))
    assert not fs.frame_path(tmp_path).exists()


def test_a_stale_picture_is_not_the_camera_view(tmp_path: Path) -> None:
    w = fs.FrameShareWriter(tmp_path, every=0.0)
    fs.request(tmp_path)
    assert w.offer(picture(9))
    at = fs.frame_path(tmp_path).stat().st_mtime
    assert fs.latest(tmp_path, clock=lambda: at + fs.FRESH_S + 1) is None
    assert fs.latest(tmp_path, clock=lambda: at + 0.5) is not None


def test_a_reader_never_sees_half_a_picture(tmp_path: Path) -> None:
    """The daemon writes as fast as it can while the staff screen reads: every read is a whole JPEG of one of the
    pictures (write to a temporary file, then rename)."""
    w = fs.FrameShareWriter(tmp_path, every=0.0)
    fs.request(tmp_path)
    pics = [picture(30, 640, 480), picture(200, 640, 480)]
    stop = threading.Event()

    def write() -> None:
        i = 0
        while not stop.is_set():
            w.offer(pics[i % 2])
            i += 1

    t = threading.Thread(target=write)
    t.start()
    seen: set[int] = set()
    try:
        reads = 0
        while reads < 300:
            got = fs.latest(tmp_path)
            if got is None:
                continue
            rgb = got.rgb()
            assert rgb is not None and rgb.shape == (480, 640, 3), "a partly written picture was read"
            corner = int(rgb[0, 0, 0])
            assert min(abs(corner - 30), abs(corner - 200)) <= 3
            seen.add(round(corner / 100))
            reads += 1
    finally:
        stop.set()
        t.join()
    assert w.written > 10 and len(seen) == 2
    w.close()
    assert [p.name for p in tmp_path.iterdir()] == [fs.REQUEST_NAME]
