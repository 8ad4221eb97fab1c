"""Follows each face across frames so that one presence in front of the camera gives one decision.

A greedy IoU tracker with a centre-distance fallback: at the kiosk faces are large and move slowly,
so overlap is the strongest cue; the fallback keeps a track through a quick head movement at a low
frame rate. A track ends after `max_missing` frames without its face.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from edge.recognition.detect import Face

#: a frame (uint8 RGB) and the face box in it (top, right, bottom, left): what the kiosk decided on
Snapshot = tuple[np.ndarray, tuple[int, int, int, int]]


@dataclass
class Observation:
    frame_index: int
    source_ts: float
    face: Face
    #: raw descriptor, when this frame was embedded
    embedding: np.ndarray | None = None


@dataclass
class Track:
    id: int
    first_frame: int
    last_frame: int
    #: source time the presence was first seen (observations are trimmed, this is not)
    first_ts: float = 0.0
    observations: list[Observation] = field(default_factory=list)
    missing: int = 0
    #: set once the pipeline has made this presence's one decision
    decided: bool = False
    #: frames kept for liveness (the most recent few, RGB)
    frames: list[np.ndarray] = field(default_factory=list)
    #: the latest frame with this face and its box, kept for the audit snapshot (edge/store/evidence.py)
    snapshot: Snapshot | None = None

    @property
    def box(self) -> tuple[int, int, int, int]:
        return self.observations[-1].face.box

    @property
    def embeddings(self) -> list[np.ndarray]:
        return [o.embedding for o in self.observations if o.embedding is not None]

    @property
    def frames_since_embed(self) -> int:
        for o in reversed(self.observations):
            if o.embedding is not None:
                return self.last_frame - o.frame_index
        return 1 << 30


def iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    at, ar, ab, al = a
    bt, br, bb, bl = b
    iw = min(ar, br) - max(al, bl)
    ih = min(ab, bb) - max(at, bt)
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    union = (ar - al) * (ab - at) + (br - bl) * (bb - bt) - inter
    return inter / union if union > 0 else 0.0


def centre_distance(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    """Distance between box centres, in units of the smaller box's width."""
    ca = ((a[1] + a[3]) / 2, (a[0] + a[2]) / 2)
    cb = ((b[1] + b[3]) / 2, (b[0] + b[2]) / 2)
    w = max(1, min(a[1] - a[3], b[1] - b[3]))
    return float(np.hypot(ca[0] - cb[0], ca[1] - cb[1]) / w)


class Tracker:
    def __init__(self, iou_match: float = 0.3, max_missing: int = 8, max_centre_shift: float = 0.6) -> None:
        self.iou_match = iou_match
        self.max_missing = max_missing
        self.max_centre_shift = max_centre_shift
        self.tracks: dict[int, Track] = {}
        self._next_id = 1

    def update(
        self, faces: list[Face], frame_index: int, source_ts: float
    ) -> tuple[list[tuple[Track, Observation]], list[Track]]:
        """Assign this frame's faces to tracks. Returns (track, new observation) pairs and ended tracks."""
        live = list(self.tracks.values())
        pairs: list[tuple[float, int, int]] = []
        for ti, t in enumerate(live):
            for fi, f in enumerate(faces):
                o = iou(t.box, f.box)
                if o >= self.iou_match:
                    pairs.append((o, ti, fi))
                elif centre_distance(t.box, f.box) <= self.max_centre_shift:
                    pairs.append((0.0, ti, fi))
        pairs.sort(key=lambda p: -p[0])
        used_t: set[int] = set()
        used_f: set[int] = set()
        out: list[tuple[Track, Observation]] = []
        for _, ti, fi in pairs:
            if ti in used_t or fi in used_f:
                continue
            used_t.add(ti)
            used_f.add(fi)
            t = live[ti]
            obs = Observation(frame_index, source_ts, faces[fi])
            t.observations.append(obs)
            t.last_frame = frame_index
            t.missing = 0
            out.append((t, obs))
        for fi, f in enumerate(faces):
            if fi in used_f:
                continue
            t = Track(self._next_id, frame_index, frame_index, source_ts)
            self._next_id += 1
            obs = Observation(frame_index, source_ts, f)
            t.observations.append(obs)
            self.tracks[t.id] = t
            out.append((t, obs))
        ended = []
        for ti, t in enumerate(live):
            if ti not in used_t:
                t.missing += 1
                if t.missing > self.max_missing:
                    ended.append(self.tracks.pop(t.id))
        return out, ended

    def flush(self) -> list[Track]:
        """End every track (end of a replay, or shutdown)."""
        ended = list(self.tracks.values())
        self.tracks.clear()
        return ended
