"""Calibration trials of kiosk-like presences (`meal-edge calibrate --kiosk-frames`).

The kiosk decides on 3-5 frames of ONE presence, and consecutive frames are nearly the same picture:
fusing them averages camera noise away but not the pose, light and age of that moment, so a fused
kiosk probe sits about as far from its senior as one photo does, and no closer to strangers. Thresholds
fitted to 3 *different* photos fused (the photo protocol) are therefore the wrong ones for k = 3..5.
Here those rows are fitted to kiosk-like presences instead:

* a fixed set of each calibration identity's photos (up to `probes_per_person`, drawn once with the
  seed) become presences of 5 kiosk-like frames each (edge.lab.kioskframes, cached per photo);
* each round enrols every calibration identity with K of its *other* photos (drawn per round);
* enrolled trials: each presence's first k frames with a face, against that gallery; never-enrolled
  trials: the same presences with their own identity masked out (leave-one-out).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge.lab.embedding import photo_key
from edge.lab.features import FeatureTable, Probe, feature_table, rate
from edge.lab.kioskeval import MAX_FRAMES, MIN_FRAMES, Descriptors
from edge.lab.kiosktrial import PhotoSet
from edge.recognition.decide import AGREEMENT_TOLERANCE, FrameThresholds, Policy
from edge.recognition.match import Gallery

KIOSK_SALT = 0xCA1


@dataclass(frozen=True)
class KioskCalibration:
    """Per identity: the presences' face frames (in order), and the photos enrolment may use."""

    model_id: str
    presences: dict[str, list[np.ndarray]]
    enrolable: dict[str, np.ndarray]

    @property
    def n_presences(self) -> int:
        return sum(len(v) for v in self.presences.values())


def presence_photos(
    photo_set: PhotoSet, photos_per_person: int, seed: int, probes_per_person: int = 2
) -> tuple[dict[str, list[Path]], dict[str, list[Path]]]:
    """(identity -> the photos that become presences, identity -> the photos enrolment may use), drawn once:
    a person keeps at least `photos_per_person` photos for enrolment."""
    rng = np.random.default_rng([seed, KIOSK_SALT])
    probe_photos: dict[str, list[Path]] = {}
    enrol_photos: dict[str, list[Path]] = {}
    for n in sorted(photo_set.photos):
        photos = list(photo_set.photos[n])
        order = [photos[i] for i in rng.permutation(len(photos))]
        take = max(0, min(probes_per_person, len(order) - photos_per_person))
        probe_photos[n], enrol_photos[n] = order[:take], order[take:]
    return probe_photos, enrol_photos


def kiosk_calibration(
    photo_set: PhotoSet, desc: Descriptors, photos_per_person: int, seed: int, probes_per_person: int = 2
) -> KioskCalibration:
    probe_photos, enrol_photos = presence_photos(photo_set, photos_per_person, seed, probes_per_person)
    base = desc.photos([p for v in enrol_photos.values() for p in v], photo_set.padding)
    wanted = [p for v in probe_photos.values() for p in v]
    frames = desc.frames(wanted, photo_set.padding, range(MAX_FRAMES))
    presences: dict[str, list[np.ndarray]] = {}
    enrolable: dict[str, np.ndarray] = {}
    for n in sorted(photo_set.photos):
        found = [e for p in enrol_photos[n] if (e := base[photo_key(p)]) is not None]
        if not found:
            continue
        enrolable[n] = np.stack(found)
        seen = []
        for p in probe_photos[n]:
            fr = [e for i in range(MAX_FRAMES) if (e := frames[(photo_key(p), i)]) is not None]
            if len(fr) >= MIN_FRAMES:
                seen.append(np.stack(fr))
        presences[n] = seen
    return KioskCalibration(desc.encoder.model_id, presences, enrolable)


def kiosk_tables(
    kc: KioskCalibration, photos_per_person: int, rounds: int, seed: int, template_weight: float
) -> dict[int, tuple[FeatureTable, FeatureTable]]:
    """k -> (enrolled trials, never-enrolled trials), for k = MIN_FRAMES..MAX_FRAMES, over all rounds."""
    gen: dict[int, list[FeatureTable]] = {k: [] for k in range(MIN_FRAMES, MAX_FRAMES + 1)}
    imp: dict[int, list[FeatureTable]] = {k: [] for k in range(MIN_FRAMES, MAX_FRAMES + 1)}
    for r in range(rounds):
        gallery = round_gallery(kc, photos_per_person, seed, r)
        for k in gen:
            probes = [Probe(n, f[:k]) for n, fs in kc.presences.items() for f in fs if len(f) >= k]
            if probes:
                gen[k].append(feature_table(gallery, probes, template_weight))
                imp[k].append(feature_table(gallery, probes, template_weight, exclude_own=True))
    return {k: (FeatureTable.concat(gen[k]), FeatureTable.concat(imp[k])) for k in gen if gen[k]}


def round_gallery(kc: KioskCalibration, photos_per_person: int, seed: int, r: int) -> Gallery:
    rng = np.random.default_rng([seed, KIOSK_SALT, r])
    pairs = [(n, x) for n, e in kc.enrolable.items() for x in e[rng.permutation(len(e))][:photos_per_person]]
    return Gallery.from_pairs(pairs, model_id=kc.model_id)


def sequential_rule(
    kc: KioskCalibration, policy: Policy, photos_per_person: int, rounds: int, seed: int
) -> dict[str, Any]:
    """The kiosk's rule (first accept among k = 3..5 stands) on these trials: correct and wrong among
    enrolled presences, accepts among never-enrolled ones (each with its identity masked)."""
    tables = kiosk_tables(kc, photos_per_person, rounds, seed, policy.template_weight)
    ks = sorted(tables)
    n = len(tables[ks[0]][0])
    # rows of every k's table are the same presences in the same order, minus those with fewer than k frames
    lengths = np.concatenate([np.array([len(f) for fs in kc.presences.values() for f in fs]) for _ in range(rounds)])
    acc_g, right, acc_i = np.zeros(n, bool), np.zeros(n, bool), np.zeros(n, bool)
    for k in ks:
        g, i = tables[k]
        rows = np.flatnonzero(lengths >= k)
        t = policy.thresholds(k)

        def accepts(x: FeatureTable, t: FrameThresholds = t) -> np.ndarray:
            return (
                (x.distance <= t.accept_distance)
                & (x.margin >= t.min_margin)
                & (x.agreement >= t.min_agreement - AGREEMENT_TOLERANCE)
            )

        new = np.zeros(n, bool)
        new[rows] = accepts(g) & ~acc_g[rows]
        ok = np.zeros(n, bool)
        ok[rows] = g.best_correct
        right |= new & ok
        acc_g |= new
        hit = np.zeros(n, bool)
        hit[rows] = accepts(i)
        acc_i |= hit
    return {
        "frames": f"{MIN_FRAMES}-{MAX_FRAMES} (kiosk-like presences)",
        "enrolled_trials": n,
        "never_enrolled_trials": n,
        "correct": rate(int(right.sum()), n),
        "wrong": rate(int((acc_g & ~right).sum()), n),
        "not_accepted": rate(int((~acc_g).sum()), n),
        "impostor_accept": rate(int(acc_i.sum()), n),
    }
