"""The evaluation trial (who is enrolled with which photos, who probes) and the threshold sweep over it."""

from __future__ import annotations

import csv
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge.lab.faceset import FaceSet
from edge.lab.features import FeatureTable, Probe
from edge.recognition.decide import AGREEMENT_TOLERANCE, Policy, lookalikes
from edge.recognition.match import Gallery

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Trial:
    gallery: Gallery
    #: enrolment embeddings per senior (for lookalike checks)
    enrolled: dict[str, np.ndarray]
    #: every photo of each never-enrolled person, in the trial's shuffled order (impostor probes are drawn from it)
    never_enrolled: dict[str, np.ndarray]
    genuine: list[Probe]
    impostor: list[Probe]
    genuine_single: list[Probe]
    impostor_single: list[Probe]
    n_eligible: int
    n_impostor_pool: int


def build_trial(
    fs: FaceSet, gallery_size: int, photos_per_person: int, probe_frames: int, impostors: int, seed: int
) -> Trial:
    if photos_per_person < 1 or probe_frames < 1 or gallery_size < 1 or impostors < 0:
        raise ValueError("gallery size, photos per person and probe frames must be >= 1, impostors >= 0")
    rng = np.random.default_rng(seed)
    names = list(fs.identities)
    eligible = [n for n in names if len(fs.embeddings[n]) > photos_per_person]
    if len(eligible) < gallery_size:
        raise ValueError(
            f"only {len(eligible)} people have more than {photos_per_person} photos with a face; "
            f"cannot enrol {gallery_size}"
        )
    pick = rng.permutation(len(eligible))[:gallery_size]
    enrolled_names = sorted(eligible[i] for i in pick)
    enrolled_set = set(enrolled_names)
    pool = [n for n in names if n not in enrolled_set]
    if len(pool) < impostors:
        log.warning("only %d never-enrolled people available (asked for %d)", len(pool), impostors)
    imp_names = sorted(pool[i] for i in rng.permutation(len(pool))[: min(impostors, len(pool))])

    pairs: list[tuple[str, np.ndarray]] = []
    enrolled: dict[str, np.ndarray] = {}
    genuine: list[Probe] = []
    genuine_single: list[Probe] = []
    for n in enrolled_names:
        e = fs.embeddings[n][rng.permutation(len(fs.embeddings[n]))]
        enrol, rest = e[:photos_per_person], e[photos_per_person:]
        enrolled[n] = enrol
        pairs.extend((n, x) for x in enrol)
        groups = max(1, len(rest) // probe_frames)
        for g in range(groups):
            genuine.append(Probe(n, rest[g * probe_frames : (g + 1) * probe_frames]))
        genuine_single.extend(Probe(n, rest[i : i + 1]) for i in range(len(rest)))
    impostor: list[Probe] = []
    impostor_single: list[Probe] = []
    never_enrolled: dict[str, np.ndarray] = {}
    for n in imp_names:
        e = fs.embeddings[n][rng.permutation(len(fs.embeddings[n]))]
        never_enrolled[n] = e
        impostor.append(Probe(None, e[:probe_frames]))
        impostor_single.extend(Probe(None, e[i : i + 1]) for i in range(len(e)))
    gallery = Gallery.from_pairs(pairs, model_id=fs.model_id)
    return Trial(
        gallery, enrolled, never_enrolled, genuine, impostor, genuine_single, impostor_single, len(eligible), len(pool)
    )


def enrolment_pair_margins(trial: Trial, policy: Policy) -> dict[frozenset[str], float]:
    """What meal-enroll does for each senior: flag lookalikes and raise that pair's margin."""
    out: dict[frozenset[str], float] = {}
    for sid, emb in trial.enrolled.items():
        for other, _d in lookalikes(trial.gallery, sid, emb, policy):
            out[frozenset((sid, other))] = policy.lookalike_margin
    return out


SWEEP_DISTANCES = np.round(np.arange(0.20, 0.901, 0.01), 3)


def sweep(table: FeatureTable, policy: Policy, curve: str, use_margin: bool = True) -> list[dict[str, Any]]:
    """Accept-distance sweep with the policy's margin and agreement rules (or distance alone).

    Confirm is folded into reject here: the curve shows what the kiosk does on its own.
    Rows are monotone in the distance: every rate except rejected is non-decreasing.
    """
    rows = []
    g = table.genuine
    ng, ni = int(g.sum()), int((~g).sum())
    if use_margin:
        mm = np.array([policy.thresholds(int(k)).min_margin for k in table.frames])
        ag = np.array([policy.thresholds(int(k)).min_agreement for k in table.frames])
        gate = (table.margin >= mm) & (table.agreement >= ag - AGREEMENT_TOLERANCE)
    else:
        gate = np.ones(len(table), bool)
    for t in SWEEP_DISTANCES:
        acc = gate & (table.distance <= t)
        correct = int((acc & g & table.best_correct).sum())
        wrong = int((acc & g & ~table.best_correct).sum())
        imp = int((acc & ~g).sum())
        rows.append(
            {
                "curve": curve,
                "accept_distance": float(t),
                "correct_rate": correct / ng if ng else 0.0,
                "wrong_rate": wrong / ng if ng else 0.0,
                "rejected_rate": (ng - correct - wrong) / ng if ng else 0.0,
                "fnir": 1 - correct / ng if ng else 0.0,
                "impostor_accept_rate": imp / ni if ni else 0.0,
                "correct": correct,
                "wrong": wrong,
                "impostor_accept": imp,
                "genuine": ng,
                "impostor": ni,
            }
        )
    return rows


def write_sweep(rows: list[dict[str, Any]], csv_path: Path, png_path: Path, points: Mapping[str, Any]) -> None:
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    with open(csv_path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    floor = 1e-4
    for curve in dict.fromkeys(r["curve"] for r in rows):
        rs = [r for r in rows if r["curve"] == curve]
        x = [max(r["impostor_accept_rate"], floor) for r in rs]
        y = [max(r["fnir"], floor) for r in rs]
        ax.plot(x, y, marker=".", ms=3, label=curve)
    for label, (x, y) in points.items():
        ax.plot([max(x, floor)], [max(y, floor)], "k*", ms=10)
        ax.annotate(label, (max(x, floor), max(y, floor)), textcoords="offset points", xytext=(6, 6), fontsize=8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("never-enrolled accepted (FPIR); zero drawn at 1e-4")
    ax.set_ylabel("enrolled not accepted as themselves (FNIR)")
    ax.set_title("DET: accept-distance sweep (confirm counted as not accepted)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png_path, dpi=120)
    plt.close(fig)
