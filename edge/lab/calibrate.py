"""`meal-edge calibrate`: decision thresholds from labelled faces, written to models/calibration.toml (in a
checkout).

Only the calibration half of the identities is used by default (a fixed hash of the name decides;
see edge.lab.faceset.in_holdout), so `meal-edge eval --split holdout` measures people the thresholds
never saw.

Trials, repeated for several rounds that each draw different enrolment photos:
* every calibration identity is enrolled with K photos (all of them if it has no more), so the
  calibration gallery is larger than a centre's (about 450 people on LFW): impostor and wrong-senior
  rates measured against it are pessimistic for smaller centres;
* enrolled trials: each person's remaining photos in disjoint groups of exactly k, for k = 1..F;
* never-enrolled trials (leave-one-out): every person's photos in groups of k, matched against the
  gallery with that person masked out.

For each frame count k separately (fused probes sit closer to everyone), a grid search picks the
accept rule (distance, margin, frame agreement) that serves most enrolled probes while keeping the
wrong-senior and never-enrolled-accepted rates at or under their targets, then the confirm rule that
sends the most remaining enrolled probes to staff with the right name while bounding how often a
never-enrolled person or a wrong name reaches staff.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tomllib
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np

from edge.config import TrackConfig
from edge.lab.encoders import make_encoder
from edge.lab.faceset import SPLIT_SALT, FaceSet, add_common, faceset_from_args, mirror_of
from edge.lab.features import FeatureTable, calibration_tables
from edge.lab.kiosk_rule import measure_kiosk_rule, measure_policy
from edge.lab.kioskcalib import KioskCalibration, kiosk_calibration, kiosk_tables, sequential_rule
from edge.lab.kioskcmd import photo_set
from edge.lab.kioskeval import Descriptors
from edge.lab.kioskframes import Variation
from edge.modelbuild.tomlout import toml_value
from edge.paths import checkout_models_dir
from edge.recognition.calibration import CALIBRATION_FORMAT, default_calibration_path, load_policy, policy_from_dict
from edge.recognition.decide import AGREEMENT_TOLERANCE, CalibrationError, FrameThresholds, Policy, senior_distances
from edge.recognition.match import Gallery

log = logging.getLogger(__name__)

# wide enough for every model: dlib's calibrated distances lie in 0.25-0.35, SFace's (cosine 0.4-0.6) in 0.9-1.1
DIST_GRID = np.round(np.arange(0.10, 1.401, 0.005), 4)
MARGIN_GRID = np.round(np.arange(0.0, 0.4001, 0.005), 4)


@dataclass(frozen=True)
class Targets:
    wrong: float = 0.0005  # wrong senior accepted, per enrolled probe (acceptance limit 0.1%)
    impostor: float = 0.0025  # never-enrolled accepted, per never-enrolled probe (limit 0.5%)
    confirm: float = 0.04  # enrolled probes sent to staff (limit 5%)
    impostor_confirm: float = 0.03  # never-enrolled people shown to staff with a name
    confirm_wrong: float = 0.005  # enrolled probes shown to staff with somebody else's name
    # Soft costs among rules that meet the targets: a wrong payment is far worse than a turned-away senior.
    cost_wrong: float = 10.0
    cost_impostor: float = 5.0
    cost_confirm: float = 0.3  # staff time per enrolled probe sent to them
    cost_impostor_confirm: float = 0.5  # staff must say "no" to a stranger shown with a name
    # Floors that are design choices, not fitted: with no wrong or impostor event left in the data at
    # k >= 4 the search would otherwise drop the margin to 0 and with it any protection against a
    # lookalike the calibration set does not contain; accepting needs a majority of frames to agree.
    margin_floor: float = 0.03
    confirm_margin_floor: float = 0.02
    agreement_floor: float = 0.5
    cost_confirm_wrong: float = 2.0  # staff must notice the wrong name


def _counts_below(sorted_d: np.ndarray, grid: np.ndarray) -> np.ndarray:
    return np.searchsorted(sorted_d, grid, side="right")


def choose_thresholds(k: int, g: FeatureTable, i: FeatureTable, t: Targets) -> tuple[FrameThresholds, dict[str, Any]]:
    ng, ni = len(g), len(i)
    agreements = [a for a in sorted({round(j / k, 4) for j in range(k + 1)}, reverse=True) if a >= t.agreement_floor]
    if k == 1:
        agreements = [1.0]
    best: tuple[float, float, float, float] | None = None
    best_score = -np.inf
    for mm in MARGIN_GRID[MARGIN_GRID >= t.margin_floor]:
        for ag in agreements:
            gate_g = (g.margin >= mm) & (g.agreement >= ag - AGREEMENT_TOLERANCE)
            gate_i = (i.margin >= mm) & (i.agreement >= ag - AGREEMENT_TOLERANCE)
            c = _counts_below(np.sort(g.distance[gate_g & g.best_correct]), DIST_GRID) / ng
            w = _counts_below(np.sort(g.distance[gate_g & ~g.best_correct]), DIST_GRID) / ng
            im = _counts_below(np.sort(i.distance[gate_i]), DIST_GRID) / ni
            ok = (w <= t.wrong) & (im <= t.impostor)
            score = np.where(ok, c - t.cost_wrong * w - t.cost_impostor * im, -np.inf)
            j = int(np.argmax(score))
            if score[j] > best_score + 1e-12:
                best_score = float(score[j])
                best = (float(DIST_GRID[j]), float(mm), float(ag), float(c[j]))
    if best is None or not np.isfinite(best_score):
        raise CalibrationError(f"frames={k}: no accept rule meets the targets on this data")
    a, mm, ag, _ = best
    acc_g = (g.distance <= a) & (g.margin >= mm) & (g.agreement >= ag - AGREEMENT_TOLERANCE)
    acc_i = (i.distance <= a) & (i.margin >= mm) & (i.agreement >= ag - AGREEMENT_TOLERANCE)

    # Confirm rule on what the accept rule leaves: c >= a, cm <= mm.
    rest_g, rest_i = ~acc_g, ~acc_i
    cbest: tuple[float, float] = (a, mm)
    cbest_score = -np.inf
    for cm in MARGIN_GRID[(MARGIN_GRID <= mm) & (MARGIN_GRID >= min(mm, t.confirm_margin_floor))]:
        mg = rest_g & (g.margin >= cm)
        mi = rest_i & (i.margin >= cm)
        grid = DIST_GRID[DIST_GRID >= a]
        right = _counts_below(np.sort(g.distance[mg & g.best_correct]), grid) / ng
        wrongc = _counts_below(np.sort(g.distance[mg & ~g.best_correct]), grid) / ng
        imc = _counts_below(np.sort(i.distance[mi]), grid) / ni
        conf = right + wrongc
        ok = (conf <= t.confirm) & (imc <= t.impostor_confirm) & (wrongc <= t.confirm_wrong)
        score = np.where(
            ok, right - t.cost_confirm_wrong * wrongc - t.cost_impostor_confirm * imc - t.cost_confirm * conf, -np.inf
        )
        j = int(np.argmax(score))
        if score[j] > cbest_score + 1e-12:
            cbest_score = float(score[j])
            cbest = (float(grid[j]), float(cm))
    c_d, c_m = cbest
    conf_g = rest_g & (g.distance <= c_d) & (g.margin >= c_m)
    conf_i = rest_i & (i.distance <= c_d) & (i.margin >= c_m)
    figures = {
        "frames": k,
        "enrolled_trials": ng,
        "never_enrolled_trials": ni,
        "correct_rate": float((acc_g & g.best_correct).mean()),
        "wrong_rate": float((acc_g & ~g.best_correct).mean()),
        "confirm_rate": float(conf_g.mean()),
        "confirm_wrong_candidate_rate": float((conf_g & ~g.best_correct).mean()),
        "rejected_rate": float((~acc_g & ~conf_g).mean()),
        "impostor_accept_rate": float(acc_i.mean()),
        "impostor_confirm_rate": float(conf_i.mean()),
        "rank1_rate": float(g.best_correct.mean()),
    }
    return FrameThresholds(k, a, mm, c_d, c_m, ag), figures


#: fraction of unrelated pairs of seniors that enrolment may flag as lookalikes. A flag sends both
#: seniors to staff whenever they are not far clearer than the margin, so false flags cost served seniors:
#: 1 in 100,000 unrelated pairs is about half a false flag among 300 seniors (44,850 pairs). At 1 in
#: 10,000 (the first setting) the all-LFW evaluation flagged 6-8 unrelated pairs of 300 people and sent up
#: to 8 of 442 probes to staff for it. Siblings and twins sit closer than any unrelated pair measured.
LOOKALIKE_PAIR_RATE = 1e-5


def lookalike_settings(
    fs: FaceSet, photos_per_person: int, seed: int, template_weight: float, rows: list[FrameThresholds]
) -> tuple[float, float, dict[str, Any]]:
    """Lookalike distance: the distance (as decide.lookalikes measures it: each new enrolment photo
    against another senior's templates) that only LOOKALIKE_PAIR_RATE of unrelated calibration pairs
    reach. Such a pair needs twice the largest calibrated margin before the kiosk accepts without staff."""
    rng = np.random.default_rng([seed, 1_000_003])
    enrol = {n: fs.embeddings[n][rng.permutation(len(fs.embeddings[n]))][:photos_per_person] for n in fs.identities}
    gallery = Gallery.from_pairs(((n, x) for n, e in enrol.items() for x in e), model_id=fs.model_id)
    closest = []
    for j, n in enumerate(gallery.senior_ids):
        d = senior_distances(gallery, enrol[n], template_weight).min(axis=0)
        closest.append(np.delete(d, j))
    pair_d = np.concatenate(closest)  # each unordered pair twice (A's photos vs B, B's photos vs A)
    look_d = float(np.floor(np.quantile(pair_d, LOOKALIKE_PAIR_RATE) * 1000) / 1000)
    look_m = round(min(0.3, 2 * max(r.min_margin for r in rows)), 4)
    info = {
        "lookalike_pairs_measured": int(len(pair_d) // 2),
        "lookalike_pair_rate": LOOKALIKE_PAIR_RATE,
        "lookalike_distance": look_d,
    }
    return min(look_d, rows[0].accept_distance), look_m, info


#: the blend first: it is kept unless another weighting serves clearly more (by WEIGHT_TIE), because a
#: senior whose templates are later refreshed or who sometimes wears glasses is better served by it
#: than by the centroid alone, which LFW (3 photos a person) cannot show
TEMPLATE_WEIGHTS = (0.5, 0.0, 1.0)
WEIGHT_TIE = 0.002


def calibrate(
    fs: FaceSet,
    photos_per_person: int,
    max_frames: int,
    rounds: int,
    seed: int,
    targets: Targets,
    template_weights: tuple[float, ...] = TEMPLATE_WEIGHTS,
    kiosk: KioskCalibration | None = None,
) -> tuple[Policy, list[dict[str, Any]], dict[str, Any]]:
    """Thresholds per frame count for each template weighting; keep the weighting that serves most.
    With `kiosk`, the rows the kiosk decides with (3..5 frames) are fitted to kiosk-like presences."""
    best: tuple[float, float, list[FrameThresholds], list[dict[str, Any]]] | None = None
    for w in template_weights:
        tables = calibration_tables(fs, photos_per_person, max_frames, rounds, seed, w)
        if kiosk is not None:
            tables.update(kiosk_tables(kiosk, photos_per_person, rounds, seed, w))
        rows: list[FrameThresholds] = []
        figures: list[dict[str, Any]] = []
        for k in sorted(tables):
            th, fig = choose_thresholds(k, *tables[k], targets)
            fig["template_weight"] = w
            rows.append(th)
            figures.append(fig)
        served = float(np.mean([f["correct_rate"] for f in figures])) if figures else 0.0
        log.info("template weight %.2f: mean correct over frame counts %.6f", w, served)
        if best is None or served > best[0] + WEIGHT_TIE:
            best = (served, w, rows, figures)
    if best is None or not best[2] or best[2][0].frames != 1:
        raise CalibrationError("not enough photos to calibrate single-frame probes")
    _, w, rows, figures = best
    look_d, look_m, look_info = lookalike_settings(fs, photos_per_person, seed, w, rows)
    # Frame counts without a row (none, when 1..F are all calibrated) get the strictest of every row.
    policy = Policy(
        accept_distance=min(r.accept_distance for r in rows),
        confirm_distance=min(r.confirm_distance for r in rows),
        min_margin=max(r.min_margin for r in rows),
        confirm_margin=max(r.confirm_margin for r in rows),
        model_id=fs.model_id,
        min_agreement=max(r.min_agreement for r in rows),
        per_frames=tuple(rows),
        lookalike_distance=look_d,
        lookalike_margin=max(look_m, max(r.min_margin for r in rows)),
        template_weight=w,
        source="calibrate",
    )
    return policy, figures, {"template_weights_tried": list(template_weights), **look_info}


def render_toml(policy: Policy, meta: dict[str, Any], figures: list[dict[str, Any]]) -> str:
    out = [
        "# Decision thresholds for meal-edge, written by `meal-edge calibrate`; do not edit by hand.",
        "# They are valid only for the model named below: the daemon refuses them for any other model.",
        "# Distances are Euclidean between L2-normalised descriptors (0..2). See docs/accuracy.md.",
        "",
        "[calibration]",
    ]
    out += [f"{k} = {toml_value(v)}" for k, v in meta.items()]
    out += ["", "[policy]"]
    for key in (
        "accept_distance",
        "confirm_distance",
        "min_margin",
        "confirm_margin",
        "min_agreement",
        "lookalike_distance",
        "lookalike_margin",
        "template_weight",
    ):
        out.append(f"{key} = {toml_value(float(getattr(policy, key)))}")
    for r in policy.per_frames:
        out += ["", "[[policy.frames]]"]
        for key in (
            "frames",
            "accept_distance",
            "min_margin",
            "confirm_distance",
            "confirm_margin",
            "min_agreement",
        ):
            v = getattr(r, key)
            out.append(f"{key} = {toml_value(v if key == 'frames' else float(v))}")
    for f in figures:
        out += ["", "# figures on the calibration trials themselves (optimistic: these are what was tuned)"]
        out += ["[[figures]]"] + [f"{k} = {toml_value(v)}" for k, v in f.items()]
    return "\n".join(out) + "\n"


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "calibrate",
        help="compute decision thresholds from labelled faces and store them with the model",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_common(p)
    p.set_defaults(split="calibration")
    p.add_argument("--max-frames", type=int, default=5, help="calibrate fused probes of 1..N frames")
    p.add_argument("--rounds", type=int, default=10, help="repeats with different enrolment photos")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--target-wrong", type=float, default=Targets.wrong, help="wrong-senior accepts per probe")
    p.add_argument("--target-impostor", type=float, default=Targets.impostor, help="never-enrolled accepts")
    p.add_argument("--max-confirm", type=float, default=Targets.confirm, help="enrolled probes sent to staff")
    p.add_argument(
        "--kiosk-frames",
        action="store_true",
        help="fit the rows the kiosk decides with (3-5 frames) to kiosk-like presences (one photo seen as 5 "
        "frames, edge.lab.kioskframes) instead of fused different photos",
    )
    p.add_argument("--probes-per-person", type=int, default=2, help="with --kiosk-frames: presences per person")
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="default, in a checkout: the model's file in models/ (an installed meal-edge needs --out)",
    )
    p.add_argument(
        "--measure",
        type=Path,
        default=None,
        metavar="CALIBRATION_TOML",
        help="write nothing: score these thresholds on the same trials (e.g. --split holdout)",
    )
    p.set_defaults(func=run)
    return p


def _print_measure(
    rows: list[dict[str, Any]],
    keys: tuple[str, ...] = ("correct", "wrong", "confirm", "rejected", "impostor_accept", "impostor_confirm"),
) -> None:
    def f(x: dict[str, Any]) -> str:
        return f"{x['count']}/{x['n']} = {100 * x['rate']:.3f}% [{100 * x['ci95'][0]:.3f}, {100 * x['ci95'][1]:.3f}]"

    for r in rows:
        print(f"frames={r['frames']}:")
        for key in keys:
            print(f"  {key:17s} {f(r[key])}")


def run_measure(args: argparse.Namespace) -> int:
    try:
        fs = faceset_from_args(args)
        policy = load_policy(fs.model_id, args.measure)
        rows = measure_policy(fs, policy, args.photos_per_person, args.max_frames, args.rounds, args.seed)
    except (CalibrationError, FileNotFoundError, ValueError, KeyError) as e:
        print(f"meal-edge calibrate: {e}", file=sys.stderr)
        return 2
    kiosk = measure_kiosk_rule(fs, policy, args.photos_per_person, args.rounds, args.seed)
    print(f"{args.measure} on {fs.root.name} ({args.split}: {len(fs.identities)} people), seed {args.seed}")
    _print_measure(rows)
    _print_measure([kiosk], ("correct", "wrong", "not_accepted", "impostor_accept"))
    return 0


def run(args: argparse.Namespace) -> int:
    if getattr(args, "measure", None) is not None:
        return run_measure(args)
    targets = Targets(wrong=args.target_wrong, impostor=args.target_impostor, confirm=args.max_confirm)
    kc: KioskCalibration | None = None
    try:
        fs = faceset_from_args(args)
        if args.kiosk_frames:
            kc = kiosk_calibration(
                photo_set(args.faces_dir, args.pad, args.split),
                Descriptors(
                    make_encoder(args.model, mirror_of(args), args.detector), None if args.no_cache else args.cache
                ),
                args.photos_per_person,
                args.seed,
                args.probes_per_person,
            )
        policy, figures, info = calibrate(
            fs, args.photos_per_person, args.max_frames, args.rounds, args.seed, targets, kiosk=kc
        )
    except (CalibrationError, FileNotFoundError, ValueError, KeyError) as e:
        print(f"meal-edge calibrate: {e}", file=sys.stderr)
        return 2
    # The kiosk decides with several looks (3, then up to 5 frames): check that rule, not only each k.
    tc = TrackConfig()
    kiosk = (
        measure_kiosk_rule(fs, policy, args.photos_per_person, args.rounds, args.seed, tc.min_frames, tc.max_frames)
        if kc is None
        else sequential_rule(kc, policy, args.photos_per_person, args.rounds, args.seed)
    )
    kiosk_meta = {
        "kiosk_rule_frames": [tc.min_frames, tc.max_frames],
        "kiosk_rule_trials": "kiosk-like presences" if kc is not None else "groups of 5 different photos",
        "kiosk_rule_correct_rate": round(kiosk["correct"]["rate"], 6),
        "kiosk_rule_wrong_rate": round(kiosk["wrong"]["rate"], 6),
        "kiosk_rule_impostor_accept_rate": round(kiosk["impostor_accept"]["rate"], 6),
    }
    meta = {
        "format": CALIBRATION_FORMAT,
        "model_id": fs.model_id,
        "created": datetime.now(ZoneInfo("Asia/Shanghai")).isoformat(timespec="seconds"),
        "faces_dir": fs.root.name,
        "padding": args.pad,
        "frames_rows_from": (
            f"kiosk-like presences for k >= {tc.min_frames} ({kc.n_presences} presences, variation "
            f"{Variation().tag()}), fused different photos below"
            if kc is not None
            else "fused different photos"
        ),
        "split": args.split,
        "split_rule": f"held out if sha256('{SPLIT_SALT}:' + name)[0] >= 128",
        "identities": len(fs.identities),
        "photos": fs.n_photos,
        "seed": args.seed,
        "rounds": args.rounds,
        "photos_per_person": args.photos_per_person,
        "frame_counts": [r.frames for r in policy.per_frames],
        "target_wrong_rate": targets.wrong,
        "target_impostor_accept_rate": targets.impostor,
        "target_confirm_rate": targets.confirm,
        "target_impostor_confirm_rate": targets.impostor_confirm,
        "target_confirm_wrong_candidate_rate": targets.confirm_wrong,
        **info,
        **kiosk_meta,
        "command": " ".join(
            [
                "meal-edge calibrate",
                fs.root.name,
                f"--model {args.model}",
                f"--split {args.split}",
                f"--seed {args.seed}",
            ]
            + (["--no-mirror"] if not mirror_of(args) else ["--mirror"])
            + ([f"--kiosk-frames --probes-per-person {args.probes_per_person}"] if kc is not None else [])
            + [f"--rounds {args.rounds}", f"--photos-per-person {args.photos_per_person}"]
            + [f"--max-frames {args.max_frames}", f"--target-wrong {targets.wrong}"]
            + [f"--target-impostor {targets.impostor}", f"--max-confirm {targets.confirm}"]
        ),
    }
    text = render_toml(policy, meta, figures)
    policy_from_dict(tomllib.loads(text), "<generated>")  # what we write must load
    if args.out is not None:
        out = Path(args.out)
    elif checkout_models_dir() is not None:  # a checkout: models/ is the source of truth of the shipped files
        out = default_calibration_path(fs.model_id)
    else:
        raise CalibrationError(
            "this meal-edge is installed, and its calibration files are part of the package: name a file with "
            "--out FILE and point [recognition] calibration at it"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(out)
    print(f"wrote {out} for model {fs.model_id} ({len(fs.identities)} identities, split {args.split})")
    for f in figures:
        print(
            f"  frames={f['frames']}: correct {100 * f['correct_rate']:.2f}%  "
            f"wrong {100 * f['wrong_rate']:.3f}%  "
            f"confirm {100 * f['confirm_rate']:.2f}%  rejected {100 * f['rejected_rate']:.2f}%  "
            f"never-enrolled accepted {100 * f['impostor_accept_rate']:.3f}%  "
            f"({f['enrolled_trials']} enrolled / {f['never_enrolled_trials']} never-enrolled trials)"
        )
    print(
        f"  kiosk rule ({tc.min_frames} frames, then up to {tc.max_frames}): correct "
        f"{100 * kiosk['correct']['rate']:.2f}%  wrong {100 * kiosk['wrong']['rate']:.3f}%  never-enrolled accepted "
        f"{100 * kiosk['impostor_accept']['rate']:.3f}%  "
        f"({kiosk['enrolled_trials']} enrolled / {kiosk['never_enrolled_trials']} never-enrolled trials)"
    )
    if kiosk["wrong"]["rate"] > targets.wrong or kiosk["impostor_accept"]["rate"] > targets.impostor:
        # Each look is another chance for a stranger: the per-k targets do not bound the whole rule.
        print(
            "  WARNING: the kiosk rule exceeds the targets on these trials; consider [track] max_frames = "
            f"{tc.min_frames} (one look) or stricter --target-impostor",
            file=sys.stderr,
        )
    return 0
