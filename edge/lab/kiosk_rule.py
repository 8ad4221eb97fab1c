"""The kiosk's own rule measured on the calibration trials: each presence decided as the kiosk decides it
(edge.recognition.decide.decide_sequential), and a policy's error rates per frame count."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from edge.lab.faceset import FaceSet
from edge.lab.features import FeatureTable, Probe, calibration_tables, feature_table, rate
from edge.recognition.decide import (
    AGREEMENT_TOLERANCE,
    FrameThresholds,
    Policy,
)
from edge.recognition.match import Gallery


def measure_policy(
    fs: FaceSet, policy: Policy, photos_per_person: int, max_frames: int, rounds: int, seed: int
) -> list[dict[str, Any]]:
    """The calibration trials (large gallery, leave-one-out never-enrolled) scored with a fixed policy:
    run on the held-out identities it gives thousands of trials per frame count that the thresholds
    never saw. Lookalike pair margins are not applied (they only move accepts to staff)."""
    tables = calibration_tables(fs, photos_per_person, max_frames, rounds, seed, policy.template_weight)
    out = []
    for k in sorted(tables):
        g, i = tables[k]
        t = policy.thresholds(k)

        def rule(x: FeatureTable, t: FrameThresholds = t) -> tuple[np.ndarray, np.ndarray]:
            acc = _accepts(x, t)
            conf = ~acc & (x.distance <= t.confirm_distance) & (x.margin >= t.confirm_margin)
            return acc, conf

        ag, cg = rule(g)
        ai, ci = rule(i)
        ng, ni = len(g), len(i)
        out.append(
            {
                "frames": k,
                "enrolled_trials": ng,
                "never_enrolled_trials": ni,
                "correct": rate(int((ag & g.best_correct).sum()), ng),
                "wrong": rate(int((ag & ~g.best_correct).sum()), ng),
                "confirm": rate(int(cg.sum()), ng),
                "rejected": rate(int((~ag & ~cg).sum()), ng),
                "impostor_accept": rate(int(ai.sum()), ni),
                "impostor_confirm": rate(int(ci.sum()), ni),
            }
        )
    return out


def _accepts(x: FeatureTable, t: FrameThresholds) -> np.ndarray:
    return (
        (x.distance <= t.accept_distance)
        & (x.margin >= t.min_margin)
        & (x.agreement >= t.min_agreement - AGREEMENT_TOLERANCE)
    )


@dataclass(frozen=True)
class KioskRound:
    """One round of measure_kiosk_rule's trials and what the rule decided for each (kept for tests that
    check the vectorised rule against edge.recognition.decide.decide_sequential on the same trials)."""

    gallery: Gallery
    #: (identity, max_frames photos) enrolled presences: the identity is in the gallery
    enrolled: list[tuple[str, np.ndarray]]
    #: (identity, max_frames photos) never-enrolled presences: decided with that identity masked out
    strangers: list[tuple[str, np.ndarray]]
    accepted: np.ndarray  # bool [len(enrolled)]
    correct: np.ndarray  # bool [len(enrolled)] accepted as the right senior
    stranger_accepted: np.ndarray  # bool [len(strangers)]


def kiosk_round(
    fs: FaceSet, policy: Policy, photos_per_person: int, seed: int, r: int, min_frames: int = 3, max_frames: int = 5
) -> KioskRound:
    """Round r of measure_kiosk_rule: a gallery of every identity's first photos_per_person (shuffled) photos,
    enrolled presences from the rest, never-enrolled presences from all photos with the identity masked."""
    rng = np.random.default_rng([seed, r])
    shuffled = {n: fs.embeddings[n][rng.permutation(len(fs.embeddings[n]))] for n in fs.identities}
    gallery = Gallery.from_pairs(
        ((n, x) for n, e in shuffled.items() for x in e[:photos_per_person]), model_id=fs.model_id
    )
    g_groups = [
        (n, e[photos_per_person:][j : j + max_frames])
        for n, e in shuffled.items()
        for j in range(0, len(e) - photos_per_person - max_frames + 1, max_frames)
    ]
    i_groups = [
        (n, e[j : j + max_frames]) for n, e in shuffled.items() for j in range(0, len(e) - max_frames + 1, max_frames)
    ]
    ag, cg = np.zeros(len(g_groups), bool), np.zeros(len(g_groups), bool)
    ai = np.zeros(len(i_groups), bool)
    for k in range(min_frames, max_frames + 1):
        t = policy.thresholds(k)
        g = feature_table(gallery, [Probe(n, x[:k]) for n, x in g_groups], policy.template_weight)
        i = feature_table(gallery, [Probe(n, x[:k]) for n, x in i_groups], policy.template_weight, exclude_own=True)
        new_g = _accepts(g, t) & ~ag
        cg |= new_g & g.best_correct
        ag |= new_g
        ai |= _accepts(i, t)
    return KioskRound(gallery, g_groups, i_groups, ag, cg, ai)


def measure_kiosk_rule(
    fs: FaceSet,
    policy: Policy,
    photos_per_person: int,
    rounds: int,
    seed: int,
    min_frames: int = 3,
    max_frames: int = 5,
) -> dict[str, Any]:
    """The calibration trials decided as the kiosk decides a presence (edge.recognition.decide.decide_sequential):
    groups of max_frames photos, accepted at the first of min_frames..max_frames that accepts. Every look is another
    chance for a stranger, so this is the never-enrolled rate a centre actually gets. Confirm is not split
    out here (the accept rule is what pays); lookalike pair margins are not applied."""
    done = [kiosk_round(fs, policy, photos_per_person, seed, r, min_frames, max_frames) for r in range(rounds)]
    acc_g = np.concatenate([x.accepted for x in done])
    correct_g = np.concatenate([x.correct for x in done])
    acc_i = np.concatenate([x.stranger_accepted for x in done])
    ng, ni = len(acc_g), len(acc_i)
    return {
        "frames": f"{min_frames}-{max_frames} (kiosk)",
        "enrolled_trials": ng,
        "never_enrolled_trials": ni,
        "correct": rate(int(correct_g.sum()), ng),
        "wrong": rate(int((acc_g & ~correct_g).sum()), ng),
        "not_accepted": rate(int((~acc_g).sum()), ng),
        "impostor_accept": rate(int(acc_i.sum()), ni),
    }
