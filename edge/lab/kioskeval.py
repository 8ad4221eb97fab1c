"""Kiosk-like evaluation: each presence is ONE photo seen as 3-5 kiosk frames (edge.lab.kioskframes),
decided as the kiosk decides (edge.recognition.decide.decide_sequential: on the first 3 frames with a
face, then with each further frame up to 5; the first accept stands), against a gallery of enrolled
people plus distractors (edge.lab.kiosktrial).

A presence in which fewer than 3 of the 5 frames show a face gets no decision (a kiosk keeps looking;
the senior is not served automatically): it is counted as turned away, and separately as
`too_few_faces`. Outcomes are reported for everybody and for each slice (by the person in front of
the kiosk), with counts wherever a slice is too small for a rate to mean much.
"""

from __future__ import annotations

import csv
import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge.lab.embedding import Key, cache_file, embed_frames, embed_photos, photo_key
from edge.lab.encoders import PhotoEncoder
from edge.lab.faceset import EmbeddingCache
from edge.lab.features import FeatureTable, Probe, feature_table, rate, tally
from edge.lab.kioskframes import Variation
from edge.lab.kiosktrial import KioskTrial, PhotoSet, Presence
from edge.lab.slices import Slice
from edge.recognition.decide import AGREEMENT_TOLERANCE, Policy, Verdict, decide, decide_sequential, lookalike_pairs
from edge.recognition.match import Gallery

log = logging.getLogger(__name__)

#: the kiosk's [track] defaults (edge.config.TrackConfig): decide on 3 frames, then up to 5
MIN_FRAMES = 3
MAX_FRAMES = 5
#: slices with fewer enrolled presences than this are reported as counts only
MIN_FOR_RATE = 100


@dataclass
class Descriptors:
    """Cached descriptors of photos and kiosk frames of several photo sets, for one encoder."""

    encoder: PhotoEncoder
    cache_dir: Path | None
    variation: Variation = field(default_factory=Variation)
    frames_seed: int = 0
    _caches: dict[tuple[str, float], EmbeddingCache] = field(default_factory=dict)

    def _cache(self, kind: str, padding: float) -> EmbeddingCache | None:
        if self.cache_dir is None:
            return None
        k = (kind, padding)
        if k not in self._caches:
            path = cache_file(self.cache_dir, self.encoder.model_id, self.encoder.tag, padding, kind)
            self._caches[k] = EmbeddingCache(path, self.encoder.model_id)
        return self._caches[k]

    def photos(self, paths: Sequence[Path], padding: float) -> dict[Key, np.ndarray | None]:
        return embed_photos(paths, self.encoder, self._cache("embeddings", padding), padding)

    def frames(self, paths: Sequence[Path], padding: float, idx: Sequence[int]) -> dict[tuple[Key, int], Any]:
        return embed_frames(
            paths, self.encoder, self._cache("frames", padding), self.variation, self.frames_seed, idx, padding
        )


def no_decision(found: int) -> Verdict:
    return Verdict("unknown", None, 2.0, 0.0, found, ("too_few_faces",))


@dataclass(frozen=True)
class KioskRun:
    trial: KioskTrial
    gallery: Gallery
    pair_margins: dict[frozenset[str], float]
    presences: tuple[Presence, ...]
    #: descriptors of the frames with a face, in frame order, per presence
    frames: tuple[np.ndarray, ...]
    verdicts: tuple[Verdict, ...]
    #: enrolment photos without a face (no template)
    missing_templates: int
    #: each enrolled presence decided again with its own senior taken out of the gallery (leave-one-out: one
    #: more stranger trial each, with the pair margins of the rest); None for strangers' presences
    loo_verdicts: tuple[Verdict | None, ...] = ()


def run_kiosk_trial(
    trial: KioskTrial,
    sets: Mapping[str, PhotoSet],
    probe_set: PhotoSet,
    desc: Descriptors,
    policy: Policy,
    max_frames: int = MAX_FRAMES,
) -> KioskRun:
    """max_frames: the kiosk's [track] max_frames (3: one look at 3 frames; 5: up to three looks)."""
    if not MIN_FRAMES <= max_frames <= desc.variation.frames:
        raise ValueError(f"max frames must be between {MIN_FRAMES} and {desc.variation.frames}")
    pairs: list[tuple[str, np.ndarray]] = []
    missing = 0
    by_set: dict[str, list[tuple[str, Path]]] = {}
    for sid, photos in trial.enrolment.items():
        by_set.setdefault(trial.origin[sid], []).extend((sid, p) for p in photos)
    for set_name, items in by_set.items():
        got = desc.photos([p for _, p in items], sets[set_name].padding)
        for sid, p in items:
            e = got[photo_key(p)]
            if e is None:
                missing += 1
            else:
                pairs.append((sid, e))
    gallery = Gallery.from_pairs(pairs, model_id=desc.encoder.model_id)
    # as the daemon does on every gallery load: flag lookalike pairs among everyone enrolled
    pair_margins = lookalike_pairs(gallery, policy)
    presences = trial.presences
    paths = [p.photo for p in presences]
    first = desc.frames(paths, probe_set.padding, range(MIN_FRAMES))

    def found(p: Path, idx: Sequence[int], table: Mapping[tuple[Key, int], Any]) -> list[np.ndarray]:
        k = photo_key(p)
        return [table[(k, i)] for i in idx if table[(k, i)] is not None]

    done: dict[int, list[np.ndarray]] = {}
    need_more = []
    for j, pr in enumerate(presences):
        three = found(pr.photo, range(MIN_FRAMES), first)
        if len(three) == MIN_FRAMES and decide(gallery, np.stack(three), policy, pair_margins).outcome == "accept":
            done[j] = three
        else:
            need_more.append(j)
    more = range(MIN_FRAMES, max_frames)
    rest = desc.frames([presences[j].photo for j in need_more], probe_set.padding, more) if len(more) else {}
    for j in need_more:
        done[j] = found(presences[j].photo, range(MIN_FRAMES), first) + found(presences[j].photo, more, rest)
    frames: list[np.ndarray] = []
    verdicts: list[Verdict] = []
    for j in range(len(presences)):
        seen = done[j]
        arr = np.stack(seen) if seen else np.zeros((0, 128), np.float32)
        frames.append(arr)
        v = (
            decide_sequential(gallery, arr, policy, pair_margins, min_frames=MIN_FRAMES, max_frames=max_frames)
            if len(seen) >= MIN_FRAMES
            else None
        )
        verdicts.append(v if v is not None else no_decision(len(seen)))
    loo: list[Verdict | None] = []
    without: dict[str, tuple[Gallery, dict[frozenset[str], float]]] = {}
    for pr, arr in zip(presences, frames, strict=True):
        if not pr.enrolled:
            loo.append(None)
            continue
        if pr.person not in without:
            g = gallery.without(pr.person)
            without[pr.person] = (g, {k: m for k, m in pair_margins.items() if pr.person not in k})
        g, pm = without[pr.person]
        v = (
            decide_sequential(g, arr, policy, pm, min_frames=MIN_FRAMES, max_frames=max_frames)
            if len(arr) >= MIN_FRAMES
            else None
        )
        loo.append(v if v is not None else no_decision(len(arr)))
    return KioskRun(trial, gallery, pair_margins, presences, tuple(frames), tuple(verdicts), missing, tuple(loo))


def _probes(run: KioskRun, keep: np.ndarray) -> tuple[list[Probe], list[Verdict]]:
    probes, verdicts = [], []
    for j in np.flatnonzero(keep):
        pr = run.presences[j]
        e = run.frames[j] if len(run.frames[j]) else np.zeros((1, 128), np.float32)
        probes.append(Probe(pr.person if pr.enrolled else None, e))
        verdicts.append(run.verdicts[j])
    return probes, verdicts


def summarise(run: KioskRun, keep: np.ndarray) -> dict[str, Any]:
    probes, verdicts = _probes(run, keep)
    out = tally(probes, verdicts)
    people = {run.presences[j].person for j in np.flatnonzero(keep)}
    out["people"] = {
        "enrolled": len(people & set(run.trial.enrolled)),
        "strangers": len(people & set(run.trial.strangers)),
    }
    out["too_few_faces"] = {
        "enrolled": sum(1 for p, v in zip(probes, verdicts, strict=True) if p.truth and "too_few_faces" in v.reasons),
        "never_enrolled": sum(
            1 for p, v in zip(probes, verdicts, strict=True) if p.truth is None and "too_few_faces" in v.reasons
        ),
    }
    out["accepted_at_frames"] = dict(sorted(Counter(str(v.frames) for v in verdicts if v.outcome == "accept").items()))
    out["reasons"] = dict(
        sorted(
            Counter(
                ("enrolled:" if p.truth else "never_enrolled:") + r
                for p, v in zip(probes, verdicts, strict=True)
                for r in v.reasons
            ).items()
        )
    )
    out["rate_meaningful"] = out["counts"]["genuine"] >= MIN_FOR_RATE
    loo = [run.loo_verdicts[j] for j in np.flatnonzero(keep) if run.loo_verdicts and run.loo_verdicts[j] is not None]
    n_imp = out["counts"]["impostor"]
    acc = sum(1 for v in loo if v is not None and v.outcome == "accept")
    conf = sum(1 for v in loo if v is not None and v.outcome == "confirm")
    out["leave_one_out"] = {
        "trials": len(loo),
        "accept": rate(acc, len(loo)),
        "confirm": rate(conf, len(loo)),
        # strangers' presences and leave-one-out trials together: every trial of someone not in the gallery
        "all_stranger_trials_accept": rate(acc + out["counts"]["impostor_accept"], len(loo) + n_imp),
    }
    return out


def slice_masks(run: KioskRun, slices: Sequence[Slice]) -> dict[str, np.ndarray]:
    people = np.array([p.person for p in run.presences])
    out = {"all": np.ones(len(people), bool)}
    for s in slices:
        out[s.name] = np.isin(people, sorted(s.identities))
    return out


def report(run: KioskRun, slices: Sequence[Slice]) -> dict[str, Any]:
    t = run.trial
    return {
        "gallery": {
            "people": len(run.gallery),
            "templates": run.gallery.n_templates,
            "enrolled_probed": len(t.enrolled),
            "distractors": len(t.distractors),
            "distractor_sets": dict(sorted(Counter(t.origin[d] for d in t.distractors).items())),
            "enrolment_photos_without_face": run.missing_templates,
            "lookalike_pairs": len(run.pair_margins),
        },
        "strangers": len(t.strangers),
        "slices": {name: summarise(run, m) for name, m in slice_masks(run, slices).items()},
    }


# --------------------------------------------------------------------------------------------- DET


#: offsets added to every frame count's calibrated accept distance
DET_OFFSETS = np.round(np.arange(-0.30, 0.301, 0.01), 3)


def kiosk_tables(run: KioskRun, policy: Policy) -> dict[int, tuple[FeatureTable, np.ndarray]]:
    """k -> (features of each presence's first k face frames, which presences have k frames)."""
    out = {}
    for k in range(MIN_FRAMES, max(MIN_FRAMES, max((len(f) for f in run.frames), default=0)) + 1):
        have = np.array([len(f) >= k for f in run.frames])
        probes = [
            Probe(p.person if p.enrolled else None, f[:k] if len(f) >= k else np.zeros((1, 128), np.float32) + 1)
            for p, f in zip(run.presences, run.frames, strict=True)
        ]
        out[k] = (feature_table(run.gallery, probes, policy.template_weight), have)
    return out


def det_rows(run: KioskRun, policy: Policy, masks: Mapping[str, np.ndarray]) -> list[dict[str, Any]]:
    """The kiosk rule with every accept distance moved by the same offset (margin and agreement as
    calibrated; lookalike pair margins and the confirm band left out: confirm counts as not accepted)."""
    tables = kiosk_tables(run, policy)
    rows = []
    enrolled = np.array([p.enrolled for p in run.presences])
    for off in DET_OFFSETS:
        acc = np.zeros(len(run.presences), bool)
        right = np.zeros(len(run.presences), bool)
        for k, (t, have) in tables.items():
            th = policy.thresholds(k)
            ok = (
                have
                & ~acc
                & (t.distance <= th.accept_distance + off)
                & (t.margin >= th.min_margin)
                & (t.agreement >= th.min_agreement - AGREEMENT_TOLERANCE)
            )
            right |= ok & t.best_correct
            acc |= ok
        for name, m in masks.items():
            g, i = m & enrolled, m & ~enrolled
            ng, ni = int(g.sum()), int(i.sum())
            rows.append(
                {
                    "slice": name,
                    "offset": float(off),
                    "enrolled": ng,
                    "never_enrolled": ni,
                    "correct": int((acc & right & g).sum()),
                    "wrong": int((acc & ~right & g).sum()),
                    "impostor_accept": int((acc & i).sum()),
                    "fnir": 1 - int((acc & right & g).sum()) / ng if ng else float("nan"),
                    "fpir": int((acc & i).sum()) / ni if ni else float("nan"),
                }
            )
    return rows


def write_det(rows: list[dict[str, Any]], points: Mapping[str, tuple[float, float]], out: Path, title: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "kiosk_det.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    floor = 1e-4
    for name in dict.fromkeys(r["slice"] for r in rows):
        rs = [r for r in rows if r["slice"] == name and r["enrolled"] and r["never_enrolled"]]
        if not rs:
            continue
        (line,) = ax.plot(
            [max(r["fpir"], floor) for r in rs],
            [max(r["fnir"], floor) for r in rs],
            marker=".",
            ms=3,
            label=f"{name} ({rs[0]['enrolled']} enrolled / {rs[0]['never_enrolled']} stranger presences)",
        )
        if name in points:
            x, y = points[name]
            ax.plot([max(x, floor)], [max(y, floor)], "*", color=line.get_color(), ms=11)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("strangers accepted (FPIR); zero drawn at 1e-4")
    ax.set_ylabel("enrolled not accepted as themselves (FNIR)")
    ax.set_title(title, fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "kiosk_det.png", dpi=120)
    plt.close(fig)
