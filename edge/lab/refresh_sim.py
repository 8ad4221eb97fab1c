"""`meal-edge eval --simulate-refresh`: the same trial replayed as monthly check-ins with the daemon's template
refresh."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from edge.config import RecognitionConfig
from edge.lab.features import Probe, pct, tally
from edge.lab.trial import Trial
from edge.recognition.decide import Policy, Verdict, decide, fuse, lookalike_pairs
from edge.recognition.match import Gallery
from edge.recognition.refresh import CheckIn, RefreshRule, refresh_reasons, should_refresh

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
    (Pipeline.decide_track: decide() keeps the newest policy.max_frames, verdict.frames of them)."""
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
                    f"{x['count']:4d}/{x['n']:<4d} {pct(x['rate']):>7s} [{pct(x['ci95'][0])}, {pct(x['ci95'][1])}]"
                )
            lines.append(f"    {label:30s} {cells[0]:36s} {cells[1]}")
        lines.append(f"    changed outcomes: {arms['changed'] or 'none'}")
    return lines
