"""Which faces in a frame the kiosk serves: the person at arm's length, not the room behind them.

The kiosk serves one senior at a time, standing about an arm's length from the screen. A detector as
sensitive as YuNet also finds the queue, passers-by and (on the stage footage of the tests) a whole audience;
each of those would otherwise become a presence with its own decision, and a senior standing behind a friend
could have a meal recorded without eating. The rule, a pure function of the frame's faces (docs/display.md,
"Who the kiosk serves"):

1. A face narrower than `min_face_px` is too far away to recognise: it is never served; when no face is usable,
   one at least half that size makes the kiosk say "please come closer" (smaller ones are the room behind).
2. Of the usable faces, those narrower than `min_face_ratio` x the largest stand behind the person at the
   kiosk (the queue, the room): never served, never hinted at.
3. The faces left are the "near group": people side by side at about the same distance.
   - serve = "nearest" (default): one presence at a time. The person already being served keeps the turn for
     as long as their presence lasts (until the tracker ends it): no flicker between two similar faces, and a
     neighbour never takes over a half-decided presence. Otherwise the largest face that looks at the kiosk
     (Face.turned false) is served, or the largest at all when nobody does. Two or more faces of the near
     group looking at the kiosk make it say "one at a time, please"; the other person is served once the
     first has left.
   - serve = "all": every face of the near group is its own presence (two seniors side by side are both
     decided, each on their own frames).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from edge.recognition.detect import Face
from edge.recognition.track import centre_distance, iou

ServeMode = Literal["nearest", "all"]

#: faces at least this fraction of min_face_px ask the person to come closer; smaller ones are the room behind
#: (on the stage clip YuNet finds 23-40 px faces in the audience at 640x360, min_face_px 60)
CLOSER_HINT_RATIO = 0.5


@dataclass(frozen=True)
class ServeRule:
    mode: ServeMode = "nearest"
    min_face_px: int = 60
    min_face_ratio: float = 0.8
    #: how a face continues the served presence: the tracker's own matching (edge.recognition.track)
    iou_match: float = 0.3
    max_centre_shift: float = 0.6


@dataclass(frozen=True)
class Served:
    #: the faces served in this frame, largest first (at most one with mode "nearest")
    faces: list[Face]
    #: faces were seen near enough to ask for, but none large enough to use: "come closer"
    too_small: bool = False
    #: two or more people side by side at about the same distance, looking at the kiosk, of whom only one is
    #: served (mode "nearest"): "one at a time"
    crowded: bool = False


def _continues(face: Face, box: tuple[int, int, int, int], rule: ServeRule) -> bool:
    return iou(face.box, box) >= rule.iou_match or centre_distance(face.box, box) <= rule.max_centre_shift


def choose(faces: list[Face], rule: ServeRule, serving: tuple[int, int, int, int] | None = None) -> Served:
    """The faces to serve in this frame. `serving`: the last box of the presence being served, while that
    presence lasts (None when nobody is being served)."""
    usable = [f for f in faces if f.width >= rule.min_face_px]
    if not usable:
        near_enough = any(f.width >= CLOSER_HINT_RATIO * rule.min_face_px for f in faces)
        return Served([], too_small=near_enough)
    largest = max(f.width for f in usable)
    near = sorted((f for f in usable if f.width >= rule.min_face_ratio * largest), key=lambda f: -f.width)
    if rule.mode == "all":
        return Served(near)  # everyone at the front is served: nobody needs to wait their turn
    # Of people side by side, the one facing the kiosk is the one who wants it: a neighbour looking at them (or,
    # on the stage clip, an audience watching the stage) does not take the turn from them.
    facing = [f for f in near if not f.turned]
    pool = facing or near
    crowded = len(facing) > 1
    if serving is None:
        return Served(pool[:1], crowded=crowded)
    same = [f for f in pool if _continues(f, serving, rule)]
    if same:
        return Served([max(same, key=lambda f: iou(f.box, serving))], crowded=crowded)
    # The served person is not in the near group this frame (a missed detection, a step back, gone): the turn
    # stays theirs until the tracker ends their presence (max_missing_frames); nobody else is served meanwhile.
    return Served([], crowded=crowded)
