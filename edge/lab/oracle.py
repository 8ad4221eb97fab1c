"""`meal-edge eval --upper-bound`: the best thresholds of this policy's form fitted to the trial itself (an oracle,
not a policy)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from edge.lab.features import FeatureTable, Probe, feature_table, pct, rate
from edge.lab.trial import Trial
from edge.recognition.decide import Policy

#: the issue's acceptance limits, used by the upper bound below
ACCEPTANCE_WRONG_RATE = 0.001
ACCEPTANCE_IMPOSTOR_RATE = 0.005
ORACLE_DISTANCES = np.round(np.arange(0.15, 0.6001, 0.0025), 4)
ORACLE_MARGINS = np.round(np.arange(0.0, 0.2001, 0.0025), 4)


def best_thresholds(
    g: FeatureTable,
    i: FeatureTable,
    max_wrong_rate: float = ACCEPTANCE_WRONG_RATE,
    max_impostor_rate: float = ACCEPTANCE_IMPOSTOR_RATE,
    distances: np.ndarray = ORACLE_DISTANCES,
    margins: np.ndarray = ORACLE_MARGINS,
) -> dict[str, Any]:
    """The accept rule "distance <= d and margin >= m" with the most correct accepts among enrolled trials g
    such that wrong accepts stay within max_wrong_rate of g and never-enrolled accepts within
    max_impostor_rate of i (fewest never-enrolled accepts, then the tightest d, among ties). With no
    allowed (d, m) on the grid (not even the tightest) it returns d = m = None and 0 accepts."""
    allow_wrong = math.floor(max_wrong_rate * len(g) + 1e-9)
    allow_imp = math.floor(max_impostor_rate * len(i) + 1e-9)
    best: tuple[int, int, float, float] | None = None  # (correct, -impostors, -d, m)
    found: dict[str, Any] = {"distance": None, "margin": None, "correct": 0, "wrong": 0, "impostor_accept": 0}
    for m in margins:
        keep_g = g.margin >= m
        ok = np.sort(g.distance[keep_g & g.best_correct])
        bad = np.sort(g.distance[keep_g & ~g.best_correct])
        imp = np.sort(i.distance[i.margin >= m])
        correct = np.searchsorted(ok, distances, side="right")
        wrong = np.searchsorted(bad, distances, side="right")
        strangers = np.searchsorted(imp, distances, side="right")
        for j in np.flatnonzero((wrong <= allow_wrong) & (strangers <= allow_imp)):
            key = (int(correct[j]), -int(strangers[j]), -float(distances[j]), float(m))
            if best is None or key > best:
                best = key
                found = {
                    "distance": float(distances[j]),
                    "margin": float(m),
                    "correct": int(correct[j]),
                    "wrong": int(wrong[j]),
                    "impostor_accept": int(strangers[j]),
                }
    return {**found, "enrolled": len(g), "never_enrolled": len(i)}


def oracle_report(trial: Trial, policy: Policy) -> dict[str, Any]:
    """An upper bound, not a policy: for each frame count among the enrolled probes, the distance and margin
    thresholds that give the most correct accepts on this trial itself within the acceptance limits
    (wrong <= 0.1%, never-enrolled <= 0.5% of never-enrolled probes of that frame count: every never-enrolled
    person's photos in disjoint groups of k). The agreement and lookalike rules are left out; they only
    remove accepts, so no policy of this form, however calibrated, does better on this trial."""
    g_all = feature_table(trial.gallery, trial.genuine, policy.template_weight)
    rows: dict[str, Any] = {}
    for k in sorted({int(x) for x in g_all.frames}):
        strangers = [
            Probe(None, e[j : j + k]) for e in trial.never_enrolled.values() for j in range(0, len(e) - k + 1, k)
        ]
        i = feature_table(trial.gallery, strangers, policy.template_weight)
        rows[str(k)] = best_thresholds(g_all.select(g_all.frames == k), i)
    correct = sum(r["correct"] for r in rows.values())
    return {
        "limits": {"wrong_rate": ACCEPTANCE_WRONG_RATE, "impostor_accept_rate": ACCEPTANCE_IMPOSTOR_RATE},
        "by_frames": rows,
        "correct": rate(correct, len(g_all)),
    }


def format_oracle(o: Mapping[str, Any]) -> list[str]:
    lim = o["limits"]
    c = o["correct"]
    lines = [
        "\nupper bound (NOT a policy: thresholds fitted to this trial itself, per frame count, for the most correct "
        f"accepts with wrong <= {pct(lim['wrong_rate'])} and never-enrolled <= {pct(lim['impostor_accept_rate'])}):",
        f"  correct senior accepted {c['count']:5d}/{c['n']:<5d} {pct(c['rate']):>7s}",
    ]
    for k, r in o["by_frames"].items():
        at = "no allowed threshold"
        if r["distance"] is not None:
            at = f"distance <= {r['distance']}, margin >= {r['margin']}"
        lines.append(
            f"    {k} frame(s): {r['correct']}/{r['enrolled']} correct at {at}; wrong {r['wrong']}, "
            f"never-enrolled {r['impostor_accept']}/{r['never_enrolled']}"
        )
    return lines
