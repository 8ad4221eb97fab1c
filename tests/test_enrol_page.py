"""The staff screen's enrolment page 录入 over HTTP (enroll/enrol_page.py, enroll/enrol_desk.py): a real staff
screen server with the page, a real store and the real models; uploads of a good photo, a damaged file, a photo
without a face and an oversized file; and a capture from the kiosk camera shared the way `meal-edge run` shares
it (edge.recognition.capture.CameraSource playing the Hamilton clip in real time, FrameShareWriter beside the
store). The browser test (tests/test_browser_enrol.py) drives the same through chromium and the real daemon."""

from __future__ import annotations

import re
import threading
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.error import HTTPError

import cv2
import numpy as np
import pytest
from test_pipeline_real import CLIP, SAMPLES, need_shared, write_config
from test_staff_screen import COOKIES, add_staff, fetch, login, token_of

from edge.config import Config, load_config
from edge.recognition import frameshare
from edge.recognition.capture import open_camera
from edge.screens.staffscreen import StaffScreen
from edge.screens.staffserver import serve
from edge.store import Store
from enroll.enrol_desk import EnrolDesk
from enroll.enrol_page import EnrolPage

pytestmark = pytest.mark.slow


@pytest.fixture
def zh(tmp_path: Path) -> Config:
    need_shared()
    cfg = load_config(write_config(tmp_path))
    cfg.store_path.parent.mkdir(parents=True, exist_ok=True)
    add_staff(cfg.store_path)  # creates the store
    return cfg


@pytest.fixture
def base(zh: Config) -> Iterator[str]:
    screen = StaffScreen(zh)
    page = EnrolPage(EnrolDesk(zh))
    server = serve(screen, "127.0.0.1", 0, [page])
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    url = server.url.rstrip("/")
    try:
        assert login(url).status == 303
        yield url
    finally:
        COOKIES.pop(url, None)
        server.shutdown()
        server.server_close()
        thread.join(5)
        page.close()
        screen.close()


def start_new(base: str, sid: str, name: str) -> tuple[str, str]:
    """Type a new senior on the page: (the chosen senior's page, its draft key)."""
    page = fetch(base + "/enrol").body
    a = fetch(base + "/enrol/start", {"token": token_of(page), "id": sid, "name": name, "birth": "1950-01-31",
                                      "hukou": "xuhui", "card": ""})
    assert a.status == 200, a.body
    m = re.search(r'name="d" value="([^"]+)"', a.body)
    assert m, a.body
    return a.body, m.group(1)


def post_multipart(base: str, fields: dict[str, str], files: list[tuple[str, bytes]], timeout: float = 60) -> str:
    b = uuid.uuid4().hex
    parts = [f'--{b}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode() for k, v in fields.items()]
    for name, data in files:
        parts.append(f'--{b}\r\nContent-Disposition: form-data; name="photo"; filename="{name}"\r\n'
                     f"Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n")
    body = b"".join(parts) + f"--{b}--\r\n".encode()
    req = urllib.request.Request(base + "/enrol/upload", data=body)
    req.add_header("Content-Type", f"multipart/form-data; boundary={b}")
    req.add_header("Cookie", COOKIES[base])
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:  # follows the redirect to the result
            return r.read().decode()
    except HTTPError as e:
        with e:
            return e.read().decode()


def rows(page: str) -> list[tuple[str, str, str]]:
    """(state, code, text) of each photo on the result page."""
    return re.findall(r'<li class="photo (accepted|refused)" data-code="([^"]*)">.*?<span class="text">([^<]*)</span>',
                      page)


def test_nothing_before_a_login_and_no_post_without_the_token(base: str) -> None:
    anon = fetch(base + "/enrol/preview.jpg", anon=True)
    assert anon.status == 401 and "image" not in anon.ctype
    assert fetch(base + "/enrol", anon=True).status == 401
    bad = fetch(base + "/enrol/start", {"token": "x", "senior": "LMM"})
    assert bad.status == 403


def test_typed_details_are_checked_before_any_photo(base: str, zh: Config) -> None:
    page = fetch(base + "/enrol").body
    a = fetch(base + "/enrol/start", {"token": token_of(page), "id": "A 1", "name": "", "birth": "1950-13-01",
                                      "hukou": "x"})
    assert a.status == 422 and "出生日期不对" in a.body
    a = fetch(base + "/enrol/start", {"token": token_of(page), "id": "A 1", "name": "", "birth": "1950-01-01",
                                      "hukou": "x"})
    assert a.status == 422 and "编号里不能有空格" in a.body and "请填写姓名" in a.body
    assert 'value="A 1"' in a.body  # what was typed stays in the form


def test_upload_a_good_photo_a_damaged_file_and_a_photo_without_a_face(base: str, zh: Config) -> None:
    _page, key = start_new(base, "LMM", "林曼努尔")
    good = (SAMPLES / "lin-manuel-miranda.png").read_bytes()
    _ok, empty_room = cv2.imencode(".jpg", np.tile(np.linspace(40, 200, 640, dtype=np.uint8), (480, 1)))
    big = b"\xff\xd8" + bytes(9 * 1024 * 1024)
    page = post_multipart(base, {"token": token_of(_page), "d": key}, [
        ("lin.png", good), ("broken.jpg", b"\xff\xd8\xff\xe0 this is not a photo"), ("room.jpg", empty_room.tobytes()),
        ("huge.jpg", big),
    ])
    assert "已录入：林曼努尔（LMM），新增 1 张照片" in page, page
    got = rows(page)
    assert [(s, c) for s, c, _t in got] == [
        ("accepted", ""), ("refused", "unreadable"), ("refused", "no_face"), ("refused", "too_large")]
    assert got[1][2].startswith("无法读取这张照片") and got[2][2].startswith("没有找到人脸")
    assert got[3][2].startswith("文件太大（9.0 MB，最多 8.0 MB）")
    with Store(zh.store_path) as s:
        assert s.template_count("LMM") == 1
        lines = [a for a in s.audit_log() if a.action == "enrol"]
        assert [(a.staff_id, a.target) for a in lines] == [("w01", "senior:LMM")]


def test_nothing_usable_is_refused_with_the_reasons_and_audited(base: str, zh: Config) -> None:
    page, key = start_new(base, "X1", "某人")
    out = post_multipart(base, {"token": token_of(page), "d": key}, [("a.jpg", b"GIF89a-not-really")])
    assert "没有录入：某人（X1）" in out and rows(out)[0][1] == "unreadable"
    with Store(zh.store_path) as s:
        assert s.get_senior("X1") is None
        refused = [a for a in s.audit_log() if a.action == "enrol_refused"]
        assert refused and refused[-1].staff_id == "w01" and "unreadable" in refused[-1].details["codes"]


def test_an_oversized_upload_is_not_read(base: str) -> None:
    page, key = start_new(base, "X2", "某人")
    req = urllib.request.Request(base + "/enrol/upload", data=b"x" * 10, method="POST")
    req.add_header("Content-Type", "multipart/form-data; boundary=zz")
    req.add_header("Content-Length", str(200 * 1024 * 1024))
    req.add_header("Cookie", COOKIES[base])
    with pytest.raises(HTTPError) as e:
        urllib.request.urlopen(req, timeout=5)
    assert e.value.code == 413 and "上传的文件太大" in e.value.read().decode()


def test_capture_from_the_shared_camera(base: str, zh: Config) -> None:
    """The daemon's side as `meal-edge run` has it: the clip played as a camera, each frame offered to the
    FrameShareWriter beside the store. Staff choose a new senior (the page asks for the frames), see the preview,
    press 拍照: three frames are enrolled; afterwards no picture is left beside the store."""
    folder = zh.store_path.parent
    camera = open_camera(str(CLIP))
    writer = frameshare.FrameShareWriter(folder)
    stop = threading.Event()

    def daemon() -> None:
        while not stop.is_set():
            f = camera.next_frame(0.5)
            writer.offer(f.image if f is not None else None)

    t = threading.Thread(target=daemon, daemon=True)
    t.start()
    try:
        page, key = start_new(base, "LMM", "林曼努尔")
        assert frameshare.request_path(folder).exists()  # showing the page asked for the frames
        jpeg = b""
        for _ in range(40):
            req = urllib.request.Request(base + "/enrol/preview.jpg", headers={"Cookie": COOKIES[base]})
            try:
                with urllib.request.urlopen(req, timeout=5) as r:
                    assert r.headers["Content-Type"] == "image/jpeg"
                    jpeg = r.read()
                    break
            except HTTPError as e:
                e.close()
                assert e.code == 404  # no picture yet
            stop.wait(0.1)
        img = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
        assert img is not None and img.shape[:2] == (360, 640)  # the camera's view, whole
        assert oct(frameshare.frame_path(folder).stat().st_mode & 0o777) == "0o600"
        req = urllib.request.Request(base + "/enrol/capture",
                                     data=f"token={token_of(page)}&d={key}".encode())
        req.add_header("Cookie", COOKIES[base])
        with urllib.request.urlopen(req, timeout=60) as r:
            out = r.read().decode()
        assert "已录入：林曼努尔（LMM）" in out, out
        accepted = [r for r in rows(out) if r[0] == "accepted"]
        assert len(accepted) >= 2, rows(out)
        # the capture is over: the request and the picture are gone (the daemon writes no more)
        assert not frameshare.request_path(folder).exists()
        stop.wait(0.6)
        assert not frameshare.frame_path(folder).exists()
    finally:
        stop.set()
        t.join(5)
        camera.close()
        writer.close()


def test_a_senior_on_the_roster_is_found_and_gets_more_photos(base: str, zh: Config) -> None:
    page, key = start_new(base, "LMM", "林曼努尔")
    good = (SAMPLES / "lin-manuel-miranda.png").read_bytes()
    assert "已录入" in post_multipart(base, {"token": token_of(page), "d": key}, [("a.png", good)])
    found = fetch(base + "/enrol?q=lmm").body  # as on the check-in page: name, pinyin initials, id or card
    assert "为 林曼努尔 录入" in found
    a = fetch(base + "/enrol/start", {"token": token_of(found), "senior": "LMM"})
    assert a.status == 200 and "已在名册中" in a.body and "林曼努尔（编号 LMM，1950-01-31 出生）" in a.body
    key2 = re.search(r'name="d" value="([^"]+)"', a.body)
    assert key2
    # the same photo again: skipped by the enroller (same_photo), nothing added, said in Chinese
    out = post_multipart(base, {"token": token_of(a.body), "d": key2.group(1)}, [("a.png", good)])
    assert rows(out) == [("refused", "same_photo", "这张照片已经登记过，已跳过")]
    with Store(zh.store_path) as s:
        assert s.template_count("LMM") == 1
    # an id nobody has
    assert "名册中没有编号 NOPE" in fetch(base + "/enrol/start", {"token": token_of(found), "senior": "NOPE"}).body
