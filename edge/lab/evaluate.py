"""`meal-edge eval`: measured 1:N error rates of the decision policy on labelled face folders.

--probes kiosk (the default, the headline figure; edge.lab.kioskcmd): each presence is ONE photo seen as 3-5
kiosk-like frames (edge.lab.kioskframes), decided by the kiosk's rule against a gallery that --distractors
fills to --gallery-templates, reported per --slice; see docs/accuracy.md.

--probes photos (the older protocol, fixed seed, deterministic):
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
import json
import logging
import sys
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edge.config import TrackConfig
from edge.lab.encoders import make_encoder
from edge.lab.faceset import FaceSet, add_common, faceset_from_args, mirror_of
from edge.lab.features import FeatureTable, Probe, feature_table, pct, tally
from edge.lab.kioskcmd import add_arguments, format_kiosk, kiosk_evaluate
from edge.lab.oracle import format_oracle, oracle_report
from edge.lab.refresh_sim import format_refresh, refresh_report
from edge.lab.slices import SliceError
from edge.lab.trial import Trial, build_trial, enrolment_pair_margins, sweep, write_sweep
from edge.recognition.calibration import load_policy
from edge.recognition.decide import CalibrationError, Policy, Verdict, decide, decide_sequential

log = logging.getLogger(__name__)


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
    p.add_argument("--gallery-size", "-n", type=int, default=300, help="people enrolled (and probed)")
    p.add_argument("--probe-frames", "-f", type=int, default=3, help="photos fused per probe, as frames of a track")
    p.add_argument("--impostors", "-m", type=int, default=300, help="never-enrolled people probed (strangers)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--policy", type=Path, default=None, help="calibration file (default: models/calibration.toml)")
    p.add_argument("--out", type=Path, default=None, help="folder for det.png and sweep.csv")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    add_arguments(p)
    p.add_argument(
        "--kiosk",
        action="store_true",
        help="with --probes photos: also decide each group of up to 5 photos as the kiosk decides (on 3, then "
        "each further one up to 5, first accept stands; people with fewer than 3 left get no kiosk decision)",
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
            extra = f", rule of 3 <= {pct(x['rule_of_three_upper'])}" if "rule_of_three_upper" in x else ""
            lines.append(
                f"  {label:44s} {x['count']:5d}/{x['n']:<5d} {pct(x['rate']):>7s}  "
                f"95% CI [{pct(x['ci95'][0])}, {pct(x['ci95'][1])}]{extra}"
            )
        if len(block["enrolled_by_frames"]) > 1:
            for k, b in block["enrolled_by_frames"].items():
                c = b["counts"]
                lines.append(
                    f"    enrolled probes of {k} frame(s): {c['genuine']:4d}: correct {pct(b['correct_rate'])}, "
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
        fs = faceset_from_args(args) if args.probes != "kiosk" else None
        model_id = fs.model_id if fs is not None else make_encoder(args.model, mirror_of(args), args.detector).model_id
        policy = load_policy(model_id, args.policy)
        result: dict[str, Any] = {}
        if args.probes != "photos":
            result["kiosk_like"] = kiosk_evaluate(args, policy, model_id)
        if fs is not None:
            result.update(evaluate(fs, policy, args))
    except (CalibrationError, FileNotFoundError, ValueError, KeyError, SliceError) as e:
        print(f"meal-edge eval: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result, indent=None, sort_keys=False))
        return 0
    if "kiosk_like" in result:
        print("\n".join(format_kiosk(result["kiosk_like"])))
    if fs is not None:
        print(("\n" if "kiosk_like" in result else "") + format_report(result))
    return 0
