"""`meal-edge eval`: measured 1:N error rates of the decision policy on labelled face folders.

Protocol (fixed seed, deterministic):
* identities with at least K+1 photos (with a detected face) can be enrolled; N of them are drawn
  and enrolled with K photos each (drawn at random); enrolment looks for lookalikes exactly as
  meal-enroll does and raises those pairs' margin;
* each enrolled person is probed with their remaining photos, in disjoint groups of F fused as the
  kiosk fuses the frames of one track; a person with fewer than F remaining photos gets one probe
  of what remains (so some "F-frame" probes have fewer frames; the counts by frame number are
  reported), and leftovers that cannot fill a group are dropped;
* M never-enrolled people (drawn from the rest) are probed with F of their photos fused, once each;
* the same people are also probed with every single photo (k=1), reported separately.

Outcomes for an enrolled probe: correct (accepted as the right senior), wrong (accepted as another
senior: the worst failure), confirm (staff asked; split by whether the candidate shown is right),
rejected (unknown). For a never-enrolled probe: accepted, confirm, unknown.
Rates carry 95% Wilson score intervals; for zero events the rule-of-three bound 3/n is given too.

--upper-bound adds, for each probe length, the distance and margin thresholds fitted to this trial itself that
give the most correct accepts with wrong <= 0.1% and never-enrolled <= 0.5% (never-enrolled probes of the same
length). It is an oracle, not a policy: what no re-calibration of this policy's form could beat on these people.

--simulate-refresh replays the same trial with the daemon's template refresh (edge/recognition/refresh.py, the
[recognition] refresh_* defaults): each enrolled person's probes, in a seeded random order, are monthly
check-ins (31 days apart, so the 30-day limit never binds), each decided with the gallery as it stands; an
accept inside the refresh gate stores its fused descriptor under the accepted senior (at most refresh_max,
oldest replaced) and the lookalike pairs are recomputed over the whole gallery as the daemon's reload does.
It reports the 2nd and later check-ins with and without refresh, and the never-enrolled probes against the
final gallery vs the enrolment one. LFW photos are not in time order: this measures side effects, not ageing.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import sys
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from edge.config import RecognitionConfig, TrackConfig
from edge.lab.faceset import (
    FaceSet,
    add_common,
    faceset_from_args,
)
from edge.lab.features import FeatureTable, Probe, feature_table, rate, tally
from edge.recognition.decide import (
    AGREEMENT_TOLERANCE,
    CalibrationError,
    Policy,
    Verdict,
    decide,
    decide_sequential,
    fuse,
    load_policy,
    lookalike_pairs,
    lookalikes,
)
from edge.recognition.match import Gallery
from edge.recognition.refresh import CheckIn, RefreshRule, refresh_reasons, should_refresh

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------- arithmetic


# --------------------------------------------------------------------------------------------- features


# --------------------------------------------------------------------------------------------- protocol


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


# --------------------------------------------------------------------------------------------- sweep


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


# --------------------------------------------------------------------------------------------- refresh


#: simulated check-ins of one senior are this far apart ("one a month"), so that the daemon's rate limit
#: (refresh_every_days, 30 by default) never binds: every check-in is a refresh opportunity
CHECKIN_INTERVAL = timedelta(days=31)
#: the simulated calendar starts here (only differences matter: the rate limit)
SIMULATION_START = datetime(2026, 1, 5, 3, 30, tzinfo=UTC)
#: mixed into --seed for the order of check-ins, so the trial itself (build_trial) is unchanged
REFRESH_ORDER_SALT = 0x5EF


def daemon_refresh_rule() -> RefreshRule:
    """The rule the daemon builds in Pipeline.__init__ from `[recognition] refresh_*`, with the config's
    default values (RecognitionConfig), switched on."""
    r = RecognitionConfig()
    return RefreshRule(
        enabled=True,
        max_templates=r.refresh_max,
        max_distance=r.refresh_distance,
        min_margin=r.refresh_min_margin,
        every_days=r.refresh_every_days,
    )


def genuine_outcome(truth: str, v: Verdict) -> str:
    """correct / wrong / confirm / rejected, as tally() counts an enrolled probe."""
    if v.outcome == "accept":
        return "correct" if v.senior_id == truth else "wrong"
    return "confirm" if v.outcome == "confirm" else "rejected"


def stored_probe(embeddings: np.ndarray, policy: Policy, verdict: Verdict) -> np.ndarray:
    """The descriptor the daemon stores on a refresh: the fused probe of exactly the frames decide() used
    (Pipeline._maybe_decide: decide() keeps the newest policy.max_frames, verdict.frames of them)."""
    e = np.atleast_2d(np.asarray(embeddings, np.float32))
    if policy.max_frames is not None and len(e) > policy.max_frames:
        e = e[-policy.max_frames :]
    return fuse(e[-verdict.frames :])


@dataclass(frozen=True)
class CheckInStep:
    """One simulated check-in: a genuine probe decided with the gallery as it stood that month."""

    #: the month, which is also the person's visit: 0 for their first check-in (first refresh opportunity)
    visit: int
    probe: Probe
    #: decided against the gallery of that moment (with refresh) and against the enrolment gallery
    verdict: Verdict
    baseline: Verdict
    #: why the daemon would not refresh (edge.recognition.refresh.refresh_reasons); empty: it refreshed
    reasons: tuple[str, ...]

    @property
    def refreshed(self) -> bool:
        return not self.reasons


@dataclass(frozen=True)
class RefreshSimulation:
    steps: list[CheckInStep]
    #: the gallery and lookalike pairs after the last month
    gallery: Gallery
    pair_margins: dict[frozenset[str], float]
    #: each senior's check-in templates at the end, oldest first (at most rule.max_templates)
    checkin_templates: dict[str, list[np.ndarray]]
    #: refreshes that replaced the senior's oldest check-in template
    replaced: int
    months: int


def simulate_refresh(
    trial: Trial,
    policy: Policy,
    pair_margins: Mapping[frozenset[str], float],
    rule: RefreshRule,
    seed: int,
    recompute_pairs: bool = True,
    shuffle: bool = True,
) -> RefreshSimulation:
    """Every enrolled person's probes as successive monthly check-ins, with the daemon's template refresh.

    Each person's probes are put in a seeded random order; month m, every person with an m-th probe checks in
    (the people in a seeded random order), decided with the gallery as it stands. An accept is taken to be an
    automatic recorded meal (one check-in a month: the meal rules never make it a repeat) with liveness
    confirmed; refresh_reasons() then decides exactly as Pipeline._maybe_refresh does, and a refresh adds the
    fused descriptor as a check-in template of the *accepted* senior (a wrong accept that passes the gate
    poisons the other senior, as it would on a kiosk), keeping the newest rule.max_templates of them. The
    gallery is rebuilt (Gallery.from_pairs) after each refresh and, with recompute_pairs, the lookalike pairs
    with lookalike_pairs() over the whole gallery, check-in templates included, as GalleryHolder.reload does.
    shuffle=False keeps each person's probes in trial order (photos already in time order, tests).
    """
    rng = np.random.default_rng((seed, REFRESH_ORDER_SALT))
    by_person: dict[str, list[Probe]] = {}
    for p in trial.genuine:
        if p.truth is not None:
            by_person.setdefault(p.truth, []).append(p)
    people = sorted(by_person)
    order = {
        n: [by_person[n][i] for i in (rng.permutation(len(by_person[n])) if shuffle else range(len(by_person[n])))]
        for n in people
    }
    months = max((len(v) for v in order.values()), default=0)
    photo_pairs = [(n, x) for n, emb in trial.enrolled.items() for x in emb]
    model_id = trial.gallery.model_id
    gallery = trial.gallery
    pairs: dict[frozenset[str], float] = dict(pair_margins)
    checkins: dict[str, list[np.ndarray]] = {}
    last: dict[str, datetime] = {}
    steps: list[CheckInStep] = []
    replaced = 0
    for m in range(months):
        now = SIMULATION_START + m * CHECKIN_INTERVAL
        due = [n for n in people if len(order[n]) > m]
        for i in rng.permutation(len(due)):
            p = order[due[i]][m]
            v = decide(gallery, p.embeddings, policy, pairs)
            base = decide(trial.gallery, p.embeddings, policy, pair_margins)
            sid = v.senior_id if v.outcome == "accept" else None
            check = CheckIn(
                kind="meal" if v.outcome == "accept" else v.outcome,
                automatic=True,
                liveness_enabled=False,  # LFW photos: taken as live (liveness on and live is the same gate)
                live=None,
                distance=v.distance,
                margin=v.margin,
                now=now,
                last_refresh=last.get(sid) if sid is not None else None,
                has_probe=True,
            )
            why = refresh_reasons(rule, check)
            steps.append(CheckInStep(m, p, v, base, why))
            if why or sid is None:
                continue
            kept = [*checkins.get(sid, []), stored_probe(p.embeddings, policy, v)]
            replaced += len(kept) > rule.max_templates
            checkins[sid] = kept[-rule.max_templates :]
            last[sid] = now
            gallery = Gallery.from_pairs(
                photo_pairs + [(s, x) for s, xs in checkins.items() for x in xs], model_id=model_id
            )
            if recompute_pairs:
                pairs = lookalike_pairs(gallery, policy)
    return RefreshSimulation(steps, gallery, pairs, checkins, replaced, months)


def _arms(probes: Sequence[Probe], without: Sequence[Verdict], with_: Sequence[Verdict]) -> dict[str, Any]:
    changed: Counter[str] = Counter()
    for p, a, b in zip(probes, without, with_, strict=True):
        if p.truth is not None:
            x, y = genuine_outcome(p.truth, a), genuine_outcome(p.truth, b)
        else:
            x, y = a.outcome, b.outcome
        if x != y:
            changed[f"{x} -> {y}"] += 1
    return {
        "without_refresh": tally(probes, without),
        "with_refresh": tally(probes, with_),
        "changed": dict(sorted(changed.items())),
    }


def passes_refresh_gate(rule: RefreshRule, v: Verdict) -> bool:
    """Would this verdict, as an automatic meal with liveness confirmed, store a template (ignoring the rate
    limit)? For never-enrolled probes: the strangers a kiosk would store under a senior."""
    c = CheckIn(
        kind="meal" if v.outcome == "accept" else v.outcome,
        automatic=True,
        liveness_enabled=False,
        live=None,
        distance=v.distance,
        margin=v.margin,
        now=SIMULATION_START,
        last_refresh=None,
    )
    return should_refresh(rule, c)


def refresh_report(
    trial: Trial,
    policy: Policy,
    pair_margins: Mapping[frozenset[str], float],
    seed: int,
    recompute_pairs: bool = True,
    rule: RefreshRule | None = None,
    shuffle: bool = True,
) -> dict[str, Any]:
    """The `refresh` block of `meal-edge eval --simulate-refresh`: the same trial with and without refresh."""
    rule = rule or daemon_refresh_rule()
    sim = simulate_refresh(trial, policy, pair_margins, rule, seed, recompute_pairs, shuffle)
    later = [s for s in sim.steps if s.visit > 0]
    refreshed = [s for s in sim.steps if s.refreshed]
    not_refreshed: Counter[str] = Counter(r for s in sim.steps if s.verdict.outcome == "accept" for r in s.reasons)

    def against(gallery: Gallery, pairs: Mapping[frozenset[str], float], probes: list[Probe]) -> list[Verdict]:
        return [decide(gallery, p.embeddings, policy, pairs) for p in probes]

    imp_orig = against(trial.gallery, pair_margins, trial.impostor)
    imp_final = against(sim.gallery, sim.pair_margins, trial.impostor)
    single_orig = against(trial.gallery, pair_margins, trial.impostor_single)
    single_final = against(sim.gallery, sim.pair_margins, trial.impostor_single)
    initial, final = set(pair_margins), set(sim.pair_margins)
    return {
        "rule": {
            "max_templates": rule.max_templates,
            "max_distance": rule.max_distance,
            "min_margin": rule.min_margin,
            "every_days": rule.every_days,
        },
        "schedule": {
            "checkin_interval_days": CHECKIN_INTERVAL.days,
            "rate_limit_binds": CHECKIN_INTERVAL < timedelta(days=rule.every_days),
            "months": sim.months,
            "order_seed": [seed, REFRESH_ORDER_SALT],
            "assumed": "every accept is an automatic recorded meal with liveness confirmed",
            "lookalike_pairs": (
                "recomputed with lookalike_pairs() over the whole gallery after each refresh (GalleryHolder.reload)"
                if recompute_pairs
                else "fixed at enrolment"
            ),
        },
        "people": len({s.probe.truth for s in sim.steps}),
        "people_with_later_probes": len({s.probe.truth for s in later}),
        "checkins": len(sim.steps),
        "later_checkins": len(later),
        "refreshes": len(refreshed),
        "people_refreshed": len({s.verdict.senior_id for s in refreshed}),
        "refreshes_replacing_oldest": sim.replaced,
        # a refresh stored under a senior who is not the person in the probe: a poisoned template
        "poisoned_refreshes": sum(s.verdict.senior_id != s.probe.truth for s in refreshed),
        "refreshes_by_visit": dict(sorted(Counter(str(s.visit + 1) for s in refreshed).items())),
        "checkin_templates_final": sum(len(v) for v in sim.checkin_templates.values()),
        "gallery_templates": [trial.gallery.n_templates, sim.gallery.n_templates],
        "accepts_not_refreshed": dict(sorted(not_refreshed.items())),
        "lookalike_pairs": {
            "initial": len(initial),
            "final": len(final),
            "added": len(final - initial),
            "removed": len(initial - final),
            # the refreshed arm starts from the eval's enrolment pairs: is that what the daemon would load?
            "daemon_rule_at_start_agrees": (lookalike_pairs(trial.gallery, policy) == dict(pair_margins))
            if recompute_pairs
            else None,
        },
        # the same later probes (2nd and later check-ins), decided without and with refresh
        "later_probes": _arms([s.probe for s in later], [s.baseline for s in later], [s.verdict for s in later]),
        "all_probes": _arms(
            [s.probe for s in sim.steps], [s.baseline for s in sim.steps], [s.verdict for s in sim.steps]
        ),
        # never-enrolled probes against the enrolment gallery and the final refreshed one
        "never_enrolled": _arms(trial.impostor, imp_orig, imp_final),
        "never_enrolled_single": _arms(trial.impostor_single, single_orig, single_final),
        "never_enrolled_passing_refresh_gate": {
            "probes": [sum(passes_refresh_gate(rule, v) for v in vs) for vs in (imp_orig, imp_final)],
            "single": [sum(passes_refresh_gate(rule, v) for v in vs) for vs in (single_orig, single_final)],
        },
    }


def format_refresh(r: Mapping[str, Any], probe_frames: int) -> list[str]:
    ru, sc = r["rule"], r["schedule"]
    lp = r["lookalike_pairs"]
    start = lp["daemon_rule_at_start_agrees"]
    agree = "" if start is None else f"; at the start {'the same as' if start else 'NOT the same as'} enrolment's"
    lines = [
        "",
        f"template refresh simulated (daemon rule: fused distance <= {ru['max_distance']}, margin >= "
        f"{ru['min_margin']}, at most {ru['max_templates']} check-in templates per senior, oldest replaced, "
        f"once per {ru['every_days']:g} days)",
        f"  {r['people']} enrolled people checked in once a month ({sc['checkin_interval_days']} days apart: "
        f"the rate limit {'BINDS' if sc['rate_limit_binds'] else 'never binds'}) over {sc['months']} months, "
        f"their probes in a seeded random order; {sc['assumed']}",
        f"  lookalike pairs {sc['lookalike_pairs']}: {lp['initial']} -> {lp['final']} "
        f"(+{lp['added']} -{lp['removed']}{agree})",
        f"  refreshes: {r['refreshes']} of {r['checkins']} check-ins, {r['people_refreshed']} seniors "
        f"(by visit: {', '.join(f'#{k} {v}' for k, v in r['refreshes_by_visit'].items()) or 'none'}), "
        f"{r['refreshes_replacing_oldest']} replaced the oldest, "
        f"{r['poisoned_refreshes']} stored under a senior who was not the person; "
        f"gallery {r['gallery_templates'][0]} -> {r['gallery_templates'][1]} templates",
        f"  accepts not refreshed, by reason: {r['accepts_not_refreshed']}",
    ]
    gate = r["never_enrolled_passing_refresh_gate"]
    enrolled = (
        ("correct", "correct senior accepted"),
        ("wrong", "WRONG senior accepted"),
        ("confirm", "staff asked to confirm"),
        ("rejected", "enrolled turned away"),
    )
    strangers = (("impostor_accept", "NEVER-ENROLLED accepted"), ("impostor_confirm", "never-enrolled sent to staff"))
    blocks = (
        (
            f"later check-ins (2nd and later, {r['people_with_later_probes']} people)",
            r["later_probes"],
            enrolled,
        ),
        (
            "all check-ins",
            r["all_probes"],
            enrolled,
        ),
        (
            f"never-enrolled {probe_frames}-frame probes against the enrolment gallery vs the final one "
            f"(inside the refresh gate: {gate['probes'][0]} vs {gate['probes'][1]})",
            r["never_enrolled"],
            strangers,
        ),
        (
            f"never-enrolled single photos against the enrolment gallery vs the final one "
            f"(inside the refresh gate: {gate['single'][0]} vs {gate['single'][1]})",
            r["never_enrolled_single"],
            strangers,
        ),
    )
    for title, arms, keys in blocks:
        a, b = arms["without_refresh"]["intervals"], arms["with_refresh"]["intervals"]
        n = a[keys[0][0]]["n"]
        lines.append(f"\n  {title}: {n} probes")
        lines.append(f"    {'':30s} {'without refresh':36s} with refresh")
        for key, label in keys:
            cells = []
            for x in (a[key], b[key]):
                cells.append(
                    f"{x['count']:4d}/{x['n']:<4d} {_pct(x['rate']):>7s} [{_pct(x['ci95'][0])}, {_pct(x['ci95'][1])}]"
                )
            lines.append(f"    {label:30s} {cells[0]:36s} {cells[1]}")
        lines.append(f"    changed outcomes: {arms['changed'] or 'none'}")
    return lines


# --------------------------------------------------------------------------------------------- upper bound

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
        f"accepts with wrong <= {_pct(lim['wrong_rate'])} and never-enrolled <= {_pct(lim['impostor_accept_rate'])}):",
        f"  correct senior accepted {c['count']:5d}/{c['n']:<5d} {_pct(c['rate']):>7s}",
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


# --------------------------------------------------------------------------------------------- command


def enrolled_by_frames(probes: Sequence[Probe], verdicts: Sequence[Verdict]) -> dict[str, Any]:
    """Enrolled probes' rates by how many photos the probe had."""
    by_k: dict[int, tuple[list[Probe], list[Verdict]]] = {}
    for p, v in zip(probes, verdicts, strict=True):
        if p.truth is not None:
            by_k.setdefault(p.frames, ([], []))[0].append(p)
            by_k[p.frames][1].append(v)
    keys = ("correct_rate", "wrong_rate", "confirm_rate", "rejected_rate", "counts")
    return {str(k): {key: tally(*by_k[k])[key] for key in keys} for k in sorted(by_k)}


def evaluate(fs: FaceSet, policy: Policy, args: argparse.Namespace) -> dict[str, Any]:
    trial = build_trial(fs, args.gallery_size, args.photos_per_person, args.probe_frames, args.impostors, args.seed)
    pairs = enrolment_pair_margins(trial, policy) if getattr(args, "lookalike_margins", True) else {}

    def run(probes: list[Probe]) -> tuple[dict[str, Any], FeatureTable, Counter[str]]:
        verdicts = [decide(trial.gallery, p.embeddings, policy, pairs) for p in probes]
        reasons: Counter[str] = Counter(
            ("enrolled:" if p.truth else "never_enrolled:") + r
            for p, v in zip(probes, verdicts, strict=True)
            for r in v.reasons
        )
        summary = tally(probes, verdicts)
        summary["enrolled_by_frames"] = enrolled_by_frames(probes, verdicts)
        return summary, feature_table(trial.gallery, probes, policy.template_weight), reasons

    fused, ft, reasons = run(trial.genuine + trial.impostor)
    single, st, single_reasons = run(trial.genuine_single + trial.impostor_single)
    single["reasons"] = dict(sorted(single_reasons.items()))
    result: dict[str, Any] = {
        "protocol": {
            "faces_dir": str(fs.root),
            "split": args.split,
            "gallery_size": args.gallery_size,
            "photos_per_person": args.photos_per_person,
            "probe_frames": args.probe_frames,
            "impostors_requested": args.impostors,
            "impostors": len(trial.impostor),
            "seed": args.seed,
            "identities": len(fs.identities),
            "eligible_for_enrolment": trial.n_eligible,
            "photos": fs.n_photos,
            "photos_without_face": fs.n_no_face,
        },
        "model_id": fs.model_id,
        "policy_source": policy.source,
        "lookalike_pairs": len(pairs),
        **fused,
        "reasons": dict(sorted(reasons.items())),
        "single": single,
    }
    if getattr(args, "kiosk", False):
        result["kiosk"] = kiosk_report(fs, policy, args, trial, pairs)
    if getattr(args, "oracle", False):
        result["upper_bound"] = oracle_report(trial, policy)
    if getattr(args, "simulate_refresh", False):
        result["refresh"] = refresh_report(
            trial, policy, pairs, args.seed, recompute_pairs=getattr(args, "lookalike_margins", True)
        )
    if args.out is not None:
        out = Path(args.out)
        rows = (
            sweep(ft, policy, f"{args.probe_frames}-frame probes, policy margins")
            + sweep(ft, policy, f"{args.probe_frames}-frame probes, distance only", use_margin=False)
            + sweep(st, policy, "single photo, policy margins")
            + sweep(st, policy, "single photo, distance only", use_margin=False)
        )
        csv_path, png_path = out / "sweep.csv", out / "det.png"
        points = {
            f"policy, {args.probe_frames} frames": (fused["impostor_accept_rate"], 1 - fused["correct_rate"]),
            "policy, 1 photo": (single["impostor_accept_rate"], 1 - single["correct_rate"]),
        }
        write_sweep(rows, csv_path, png_path, points)
        result["sweep_csv"] = str(csv_path)
        result["det_png"] = str(png_path)
    return result


def kiosk_report(
    fs: FaceSet, policy: Policy, args: argparse.Namespace, trial: Trial, pairs: Mapping[frozenset[str], float]
) -> dict[str, Any]:
    """The same people, enrolment photos and strangers, decided as the kiosk decides a presence
    (decide_sequential over [track] min_frames..max_frames, 3..5 by default): probes of up to max_frames
    photos; a probe with fewer than min_frames photos gets no kiosk decision and is counted apart."""
    tc = TrackConfig()
    kt = build_trial(fs, args.gallery_size, args.photos_per_person, tc.max_frames, args.impostors, args.seed)
    # same seed, same draws: the probe length only regroups each person's remaining photos
    same = kt.gallery.senior_ids == trial.gallery.senior_ids
    assert same and np.array_equal(kt.gallery.templates, trial.gallery.templates)
    probes = [p for p in kt.genuine + kt.impostor if p.frames >= tc.min_frames]
    verdicts = [
        decide_sequential(kt.gallery, p.embeddings, policy, pairs, min_frames=tc.min_frames, max_frames=tc.max_frames)
        for p in probes
    ]
    vs = [v for v in verdicts if v is not None]
    assert len(vs) == len(probes)
    out = tally(probes, vs)
    out["enrolled_by_frames"] = enrolled_by_frames(probes, vs)
    out["frames"] = {"min": tc.min_frames, "max": tc.max_frames}
    out["accepted_at_frames"] = dict(sorted(Counter(str(v.frames) for v in vs if v.outcome == "accept").items()))
    out["excluded_short_probes"] = {
        "enrolled": sum(1 for p in kt.genuine if p.frames < tc.min_frames),
        "never_enrolled": sum(1 for p in kt.impostor if p.frames < tc.min_frames),
    }
    return out


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "eval",
        help="measure 1:N error rates of the decision policy on labelled face folders",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_common(p)
    p.add_argument("--gallery-size", "-n", type=int, default=300, help="people enrolled")
    p.add_argument("--probe-frames", "-f", type=int, default=3, help="photos fused per probe, as frames of a track")
    p.add_argument("--impostors", "-m", type=int, default=300, help="never-enrolled people probed")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--policy", type=Path, default=None, help="calibration file (default: models/calibration.toml)")
    p.add_argument("--out", type=Path, default=None, help="folder for det.png and sweep.csv")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument(
        "--kiosk",
        action="store_true",
        help="also decide each presence as the kiosk does: on 3 frames, then each further frame up to 5, first "
        "accept stands (probes of up to 5 photos; people with fewer than 3 left get no kiosk decision)",
    )
    p.add_argument(
        "--no-lookalike-margins",
        dest="lookalike_margins",
        action="store_false",
        help="do not raise the margin of lookalike pairs found at enrolment (to measure what it costs)",
    )
    p.add_argument(
        "--upper-bound",
        dest="oracle",
        action="store_true",
        help="also report the most correct accepts ANY distance and margin thresholds could give on this trial "
        "within the acceptance limits (wrong <= 0.1%%, never-enrolled <= 0.5%%), fitted to the trial itself: "
        "how much a re-calibration could possibly gain, not a policy",
    )
    p.add_argument(
        "--simulate-refresh",
        action="store_true",
        help="also replay each enrolled person's probes as monthly check-ins with the daemon's template "
        "refresh ([recognition] refresh_* defaults) and compare error rates with and without it",
    )
    p.set_defaults(func=run)
    return p


def _pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def format_report(r: dict[str, Any]) -> str:
    lines = []
    pr = r["protocol"]
    lines.append(
        f"{pr['faces_dir']} ({pr['split']}): {pr['identities']} people, {pr['photos']} photos "
        f"({pr['photos_without_face']} without a face); seed {pr['seed']}"
    )
    lines.append(
        f"gallery {pr['gallery_size']} x {pr['photos_per_person']} photos, {pr['impostors']} never-enrolled, "
        f"model {r['model_id']}, policy {r['policy_source']}, {r['lookalike_pairs']} lookalike pairs flagged"
    )
    blocks = [(f"{pr['probe_frames']}-frame probes", r), ("single-photo probes", r["single"])]
    if "kiosk" in r:
        kf = r["kiosk"]["frames"]
        title = f"kiosk rule (decide on {kf['min']} frames, then each further frame up to {kf['max']})"
        blocks.append((title, r["kiosk"]))
    for title, block in blocks:
        iv = block["intervals"]
        c = block["counts"]
        lines.append(f"\n{title}: {c['genuine']} enrolled probes, {c['impostor']} never-enrolled probes")
        for key, label in (
            ("correct", "correct senior accepted"),
            ("wrong", "WRONG senior accepted"),
            ("confirm", "staff asked to confirm"),
            ("rejected", "enrolled turned away"),
            ("served", "served (correct + confirm shows right name)"),
            ("impostor_accept", "NEVER-ENROLLED accepted"),
            ("impostor_confirm", "never-enrolled sent to staff"),
        ):
            x = iv[key]
            extra = f", rule of 3 <= {_pct(x['rule_of_three_upper'])}" if "rule_of_three_upper" in x else ""
            lines.append(
                f"  {label:44s} {x['count']:5d}/{x['n']:<5d} {_pct(x['rate']):>7s}  "
                f"95% CI [{_pct(x['ci95'][0])}, {_pct(x['ci95'][1])}]{extra}"
            )
        if len(block["enrolled_by_frames"]) > 1:
            for k, b in block["enrolled_by_frames"].items():
                c = b["counts"]
                lines.append(
                    f"    enrolled probes of {k} frame(s): {c['genuine']:4d}: correct {_pct(b['correct_rate'])}, "
                    f"wrong {c['wrong']}, confirm {c['confirm']}, turned away {c['rejected']}"
                )
    if "kiosk" in r:
        k = r["kiosk"]
        lines.append(
            f"  accepted at frame count: {k['accepted_at_frames']}; no kiosk decision (fewer than "
            f"{k['frames']['min']} photos): {k['excluded_short_probes']['enrolled']} enrolled, "
            f"{k['excluded_short_probes']['never_enrolled']} never-enrolled probes"
        )
    if "upper_bound" in r:
        lines.extend(format_oracle(r["upper_bound"]))
    if "refresh" in r:
        lines.extend(format_refresh(r["refresh"], pr["probe_frames"]))
    if "det_png" in r:
        lines.append(f"\nDET curve: {r['det_png']}   sweep: {r['sweep_csv']}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    try:
        fs = faceset_from_args(args)
        policy = load_policy(fs.model_id, args.policy)
        result = evaluate(fs, policy, args)
    except (CalibrationError, FileNotFoundError, ValueError, KeyError) as e:
        print(f"meal-edge eval: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result, indent=None, sort_keys=False))
    else:
        print(format_report(result))
    return 0
