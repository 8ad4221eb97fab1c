"""Who the kiosk serves (edge/recognition/serve.py): the nearest person, one at a time; never the room behind.
Real faces (LFW photos from ../shared, two Chinese leaders side by side and a third person further back) in a
640x360 kiosk frame, the real YuNet detector and, for the pipeline, the real SFace embedder and a real store."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import cv2
import numpy as np
import pytest
import test_confirm as confirm_tests
from PIL import Image

from edge.app import Parts, build_parts, make_pipeline
from edge.config import Config, LivenessConfig
from edge.meals.feedback import Decision
from edge.meals.rules import Senior
from edge.recognition.capture import Frame
from edge.recognition.detect import Face
from edge.recognition.detectors import make_detector
from edge.recognition.serve import ServeRule, choose
from edge.store import TemplateIn

SHARED = Path(os.environ.get("MEAL_EDGE_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))
LFW = SHARED / "data" / "faces" / "lfw_deepfunneled"
JIANG, HU, KOIZUMI = "Jiang_Zemin", "Hu_Jintao", "Junichiro_Koizumi"

cfg = confirm_tests.cfg


def person(name: str, n: int, scale: float) -> np.ndarray:
    p = LFW / name / f"{name}_{n:04d}.jpg"
    if not p.exists():
        pytest.skip(f"../shared/data/... not found: {p} (set MEAL_EDGE_SHARED to the shared data folder)")
    # head and shoulders: the centre of a deep-funnelled LFW photo, without the press photo's bystanders
    rgb = np.asarray(Image.open(p).convert("RGB"))[45:215, 45:205]
    return cv2.resize(rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)


#: the photo each person shows the kiosk; enrolment uses their photos 1, 3 and 4 (SFace distance from the mean
#: template: Jiang 0.69, Hu 0.60; accepted at 0.795)
PROBE = 5


def scene(*people: tuple[str, float, int, int], n: int = PROBE) -> np.ndarray:
    """A kiosk frame (640x360) with each (name, scale, x, y) pasted in: scale 1.4 is a face about 130 px wide,
    a senior at arm's length; 0.7 is someone about twice as far away."""
    frame = np.full((360, 640, 3), 90, np.uint8)
    for name, scale, x, y in people:
        p = person(name, n, scale)
        frame[y : y + p.shape[0], x : x + p.shape[1]] = p
    return frame


SIDE_BY_SIDE = ((JIANG, 1.4, 40, 60), (HU, 1.4, 300, 70))
BEHIND = (KOIZUMI, 0.7, 520, 20)


@pytest.fixture(scope="module")
def yunet():  # type: ignore[no-untyped-def]
    return make_detector("yunet", 640)


def x_of(face: Face) -> int:
    return face.box[3]


def test_side_by_side_one_is_served_and_the_room_behind_never(yunet) -> None:  # type: ignore[no-untyped-def]
    faces = yunet.detect(scene(*SIDE_BY_SIDE, BEHIND))
    assert len(faces) == 3  # the detector does see all three
    jiang, hu = sorted(faces[:2], key=x_of)
    assert 0.8 <= hu.width / jiang.width <= 1.25 and faces[2].width < 0.6 * faces[0].width
    served = choose(faces, ServeRule())
    assert [x_of(f) for f in served.faces] == [x_of(faces[0])]  # the larger of the two at the front
    assert served.crowded and not served.too_small  # "one at a time"
    # "all": both at the front are served, each as their own presence; the one behind still is not
    both = choose(faces, ServeRule(mode="all"))
    assert sorted(x_of(f) for f in both.faces) == [x_of(jiang), x_of(hu)] and not both.crowded


def test_a_senior_alone_at_the_front_with_the_queue_behind(yunet) -> None:  # type: ignore[no-untyped-def]
    faces = yunet.detect(scene((JIANG, 1.4, 40, 60), (HU, 0.8, 330, 40), BEHIND))
    assert len(faces) == 3
    for mode in ("nearest", "all"):
        served = choose(faces, ServeRule(mode=mode))  # type: ignore[arg-type]
        assert [x_of(f) for f in served.faces] == [x_of(max(faces, key=lambda f: f.width))]
        assert not served.crowded


def test_the_person_being_served_keeps_the_turn(yunet) -> None:  # type: ignore[no-untyped-def]
    # Hu steps a little nearer than Jiang while Jiang is being served: Jiang keeps the turn
    first = choose(yunet.detect(scene((JIANG, 1.5, 40, 60), (HU, 1.2, 300, 70))), ServeRule()).faces
    assert len(first) == 1 and x_of(first[0]) < 250
    now = yunet.detect(scene((JIANG, 1.4, 44, 64), (HU, 1.45, 300, 60)))
    larger = max(now, key=lambda f: f.width)
    assert x_of(larger) > 250  # Hu is the larger face now
    kept = choose(now, ServeRule(), serving=first[0].box).faces
    assert len(kept) == 1 and x_of(kept[0]) < 250
    # with nobody being served, the larger face is
    assert [x_of(f) for f in choose(now, ServeRule()).faces] == [x_of(larger)]
    # the served person gone from the front (here: a step back, behind the ratio): nobody else is served until
    # their presence ends (the tracker's max_missing_frames)
    back = yunet.detect(scene((JIANG, 0.8, 60, 80), (HU, 1.45, 300, 60)))
    assert choose(back, ServeRule(), serving=first[0].box).faces == []


def test_too_far_asks_to_come_closer_but_the_room_does_not(yunet) -> None:  # type: ignore[no-untyped-def]
    far = yunet.detect(scene((JIANG, 0.55, 100, 100)))
    assert len(far) == 1 and 30 <= far[0].width < 60
    assert choose(far, ServeRule()).faces == [] and choose(far, ServeRule()).too_small
    room = yunet.detect(scene((JIANG, 0.25, 100, 100), (HU, 0.25, 300, 100)))
    assert room and all(f.width < 30 for f in room)
    assert not choose(room, ServeRule()).too_small


# -- the pipeline ---------------------------------------------------------------------------------------


@pytest.fixture
def parts(cfg: Config) -> Iterator[Parts]:
    """The default parts (YuNet + SFace), with Jiang, Hu and Koizumi enrolled from three other photos each."""
    p = build_parts(cfg)
    for sid, name in (("S-JIANG", JIANG), ("S-HU", HU), ("S-KOIZUMI", KOIZUMI)):
        templates = []
        for n in (1, 3, 4):
            rgb = np.ascontiguousarray(person(name, n, 1.4))
            faces = p.detector.detect(rgb)
            emb = p.embedder.embed(p.embedder.chips(rgb, faces[:1]))[0]
            templates.append(TemplateIn(emb, p.embedder.model_id, 1.0, f"{name}_{n:04d}.jpg"))
        p.store.add_senior(Senior(sid, name, date(1940, 1, 1), "xuhui"))
        p.store.add_templates(sid, templates)
    yield p
    p.store.close()


def replay(cfg: Config, parts: Parts, frames: list[np.ndarray]) -> tuple[list[Decision], list[str | None]]:
    # Liveness off: still pictures would go to staff, and this test is about who is served
    cfg = cfg.model_copy(update={"liveness": LivenessConfig(enabled=False)})
    hints: list[str | None] = []
    pipe = make_pipeline(cfg, parts, lambda _f: confirm_tests.at("11:45"), on_hint=hints.append)
    return pipe.run(Frame(i, i / 10, img) for i, img in enumerate(frames)), hints


def moving(people: tuple[tuple[str, float, int, int], ...], n: int) -> list[np.ndarray]:
    """n frames of a still scene with a small sway (2 px), as people stand at the kiosk."""
    return [scene(*((nm, s, x + 2 * (i % 2), y + (i % 3)) for nm, s, x, y in people)) for i in range(n)]


def test_two_seniors_side_by_side_are_served_one_after_the_other(cfg: Config, parts: Parts) -> None:
    # Jiang and Hu side by side at the front (Hu's face a little larger), Koizumi further back; then Hu leaves
    # and Jiang stays
    frames = moving((*SIDE_BY_SIDE, BEHIND), 20) + moving(((JIANG, 1.4, 40, 60), BEHIND), 30)
    decisions, hints = replay(cfg, parts, frames)
    assert [d.senior_id for d in decisions] == ["S-HU", "S-JIANG"], decisions
    assert all(d.kind in ("meal", "confirm") for d in decisions), decisions
    assert "one" in hints[:20] and "one" not in hints[20:]  # "one at a time" only while both are at the front


def test_serve_all_decides_both_at_once(cfg: Config, parts: Parts) -> None:
    cfg = cfg.model_copy(update={"detect": cfg.detect.model_copy(update={"serve": "all"})})
    decisions, _ = replay(cfg, parts, moving((*SIDE_BY_SIDE, BEHIND), 20))
    assert sorted(d.senior_id or "" for d in decisions) == ["S-HU", "S-JIANG"], decisions
