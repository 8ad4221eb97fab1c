"""`meal-edge eval`'s kiosk-like mode (the headline figure): arguments, run, and the printed report.

    meal-edge eval FACES_DIR --model sface --split holdout --gallery-size 200 --impostors 238 \\
        --distractors ../shared/data/faces/lfw_deepfunneled --distractors ../shared/data/faces/rmfrd_chinese@0.5 \\
        --gallery-templates 1000 --slice ../shared/data/faces/slices/lfw_east_asian.txt --slices-first

Each presence is one photo seen as up to 5 kiosk-like frames (edge.lab.kioskframes), decided by the kiosk's
rule; see edge.lab.kiosktrial for who is enrolled, who is a stranger and which distractors fill the gallery,
and edge.lab.kioskeval for how outcomes are counted.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from edge.lab.encoders import make_encoder
from edge.lab.faceset import in_holdout, list_photos, mirror_of
from edge.lab.features import pct
from edge.lab.homefirst import format_home_first, home_first
from edge.lab.kioskeval import Descriptors, det_rows, report, run_kiosk_trial, slice_masks, write_det
from edge.lab.kioskframes import Variation
from edge.lab.kiosktrial import PhotoSet, build_kiosk_trial
from edge.lab.slices import slices_for
from edge.recognition.decide import Policy


def parse_set(spec: str) -> tuple[Path, float]:
    """`DIR` or `DIR@PAD` (PAD: border fraction for tight crops, e.g. rmfrd_chinese@0.5)."""
    path, sep, padding = spec.rpartition("@")
    if not sep:
        return Path(spec), 0.0
    try:
        value = float(padding)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{spec}: expected DIR or DIR@PAD with PAD a number such as 0.5") from None
    if not 0 <= value <= 2:
        raise argparse.ArgumentTypeError(f"{spec}: PAD must be between 0 and 2")
    return Path(path), value


def photo_set(root: Path, padding: float, split: str = "all") -> PhotoSet:
    photos = list_photos(root)
    if split != "all":
        photos = {n: v for n, v in photos.items() if in_holdout(n) == (split == "holdout")}
    name = Path(root).resolve().name
    return PhotoSet(name, Path(root), {n: tuple(v) for n, v in photos.items()}, padding)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--probes",
        choices=("kiosk", "photos", "both"),
        default="kiosk",
        help="kiosk: each presence is one photo seen as 3-5 kiosk-like frames (the headline); photos: the "
        "older protocol fusing F different photos; both",
    )
    p.add_argument(
        "--distractors",
        action="append",
        default=[],
        type=parse_set,
        metavar="DIR[@PAD]",
        help="fill the gallery with people of this folder (repeatable; never anyone probed); @PAD pads tight crops",
    )
    p.add_argument(
        "--gallery-templates",
        type=int,
        default=None,
        help="add distractors until the gallery holds this many templates (default: every distractor)",
    )
    p.add_argument(
        "--slice",
        action="append",
        default=[],
        type=Path,
        metavar="FILE",
        help="report this slice separately (.txt: a name per line; .csv: a 'name' column); repeatable",
    )
    p.add_argument(
        "--slices-first",
        action="store_true",
        help="draw the slices' people before anyone else (half of those who can be enrolled are, the rest "
        "are strangers), so small slices get as many trials as the set allows",
    )
    p.add_argument("--probes-per-person", type=int, default=2, help="kiosk presences per enrolled person")
    p.add_argument("--stranger-photos", type=int, default=2, help="kiosk presences per stranger")
    p.add_argument("--frames-seed", type=int, default=0, help="seed of the kiosk-like frame variation")
    p.add_argument(
        "--max-frames",
        type=int,
        default=5,
        help="the kiosk's [track] max_frames: decide on 3 frames, then again with each further one up to this",
    )
    p.add_argument(
        "--home-size",
        type=int,
        default=None,
        metavar="N",
        help="also measure 'home centre first' (edge.lab.homefirst): centres of N people drawn from the gallery, "
        "each presence decided against its centre first and the whole gallery when that is not an accept",
    )


def kiosk_evaluate(args: argparse.Namespace, policy: Policy, model_id: str) -> dict[str, Any]:
    if getattr(args, "pad_mode", "constant") != "constant":
        raise ValueError("--pad-mode replicate is for --probes photos; kiosk-like presences pad with black")
    probe_set = photo_set(args.faces_dir, args.pad, args.split)
    distractor_sets = [photo_set(d, pad) for d, pad in args.distractors]
    sets = {probe_set.name: probe_set}
    for d in distractor_sets:
        other = sets.setdefault(d.name, d)
        if other.root.resolve() != d.root.resolve() or other.padding != d.padding:
            raise ValueError(
                f"{d.root}: another face folder (or padding) of the same name {d.name!r} is in this run; "
                "distractor ids are prefixed by the folder name: rename one"
            )
    slices = slices_for(args.slice, probe_set.photos)
    first = frozenset().union(*(s.identities for s in slices)) if args.slices_first and slices else frozenset()
    trial = build_kiosk_trial(
        probe_set,
        args.gallery_size,
        args.photos_per_person,
        args.impostors,
        args.seed,
        probes_per_person=args.probes_per_person,
        stranger_photos=args.stranger_photos,
        first=first,
        distractor_sets=distractor_sets,
        gallery_templates=args.gallery_templates,
    )
    encoder = make_encoder(args.model, mirror_of(args), args.detector)
    if encoder.model_id != model_id:
        raise ValueError(f"encoder model {encoder.model_id!r} differs from the face set's {model_id!r}")
    variation = Variation()
    desc = Descriptors(encoder, None if args.no_cache else args.cache, variation, args.frames_seed)
    run = run_kiosk_trial(trial, sets, probe_set, desc, policy, args.max_frames)
    out = report(run, slices)
    out["protocol"] = {
        "faces_dir": str(args.faces_dir),
        "padding": args.pad,
        "split": args.split,
        "seed": args.seed,
        "frames_seed": args.frames_seed,
        "variation": variation.tag(),
        "photos_per_person": args.photos_per_person,
        "probes_per_person": args.probes_per_person,
        "stranger_photos": args.stranger_photos,
        "distractors": [f"{d}@{pad:g}" for d, pad in args.distractors],
        "gallery_templates_requested": args.gallery_templates,
        "slices_first": bool(first),
        "max_frames": args.max_frames,
    }
    out["model_id"] = model_id
    out["policy_source"] = policy.source
    if args.home_size is not None:
        out["home_first"] = home_first(run, policy, args.home_size, args.seed, args.max_frames)
    if args.out is not None:
        masks = slice_masks(run, slices)
        rows = det_rows(run, policy, masks)
        points = {
            n: (s["impostor_accept_rate"], 1 - s["correct_rate"])
            for n, s in out["slices"].items()
            if s["counts"]["genuine"] and s["counts"]["impostor"]
        }
        write_det(rows, points, Path(args.out), f"kiosk-like presences, {model_id}; star: calibrated policy")
        out["det_png"] = str(Path(args.out) / "kiosk_det.png")
    return out


def _count(x: dict[str, Any]) -> str:
    return f"{x['count']}/{x['n']}"


def format_kiosk(r: dict[str, Any]) -> list[str]:
    g = r["gallery"]
    pr = r["protocol"]
    lines = [
        f"kiosk-like presences (one photo -> up to {pr['max_frames']} frames, variation {pr['variation']}, frames seed "
        f"{pr['frames_seed']}); model {r['model_id']}, policy {r['policy_source']}",
        f"gallery: {g['people']} people / {g['templates']} templates ({g['enrolled_probed']} enrolled and probed, "
        f"{g['distractors']} distractors {g['distractor_sets']}); {r['strangers']} strangers; "
        f"{g['lookalike_pairs']} lookalike pairs; {g['enrolment_photos_without_face']} enrolment photos without a face",
        "",
        "| slice | enrolled presences (people) | correct | WRONG | staff confirm | turned away (no face) "
        "| stranger presences (people) | strangers accepted (95% upper) | strangers to staff "
        "| + leave-one-out trials: accepted | all stranger trials: accepted (95% upper) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, s in r["slices"].items():
        iv, c = s["intervals"], s["counts"]

        def cell(key: str, s: dict[str, Any] = s, iv: dict[str, Any] = iv) -> str:
            x = iv[key]
            return _count(x) if not s["rate_meaningful"] else f"{_count(x)} {pct(x['rate'])}"

        imp = iv["impostor_accept"]
        both = s["leave_one_out"]["all_stranger_trials_accept"]
        lines.append(
            f"| {name} | {c['genuine']} ({s['people']['enrolled']}) | {cell('correct')} | {cell('wrong')} "
            f"(<= {pct(iv['wrong']['upper95'])}) | {cell('confirm')} | {cell('rejected')} "
            f"({s['too_few_faces']['enrolled']}) | {c['impostor']} ({s['people']['strangers']}) | "
            f"{_count(imp)} (<= {pct(imp['upper95'])}) | {_count(iv['impostor_confirm'])} | "
            f"{_count(s['leave_one_out']['accept'])} | {_count(both)} (<= {pct(both['upper95'])}) |"
        )
    lines.append(f"accepted at frame count (all): {r['slices']['all']['accepted_at_frames']}")
    if "det_png" in r:
        lines.append(f"DET per slice: {r['det_png']}")
    if "home_first" in r:
        lines += ["", *format_home_first(r["home_first"])]
    return lines
