"""Home centre first (issue 13): does deciding against the senior's own centre before the district help?

With a district-wide roster every kiosk matches against about 4,000 seniors instead of its own ~130. A
policy could first decide against the centre's own seniors and fall back to the whole district only when
that is not an accept. Fewer competitors mean larger margins (fewer staff confirmations), but a visitor
from another centre who looks like a local senior could then be accepted as that senior, where the
district-wide gallery would have seen the visitor's own templates closer. This measures both, on the
presences of a kiosk-like run (edge.lab.kioskeval.KioskRun), with the same policy and frames:

* at home: the senior's centre holds them and `home_size - 1` others drawn from the gallery;
* visiting: the senior eats at a centre of `home_size` others (they are in the district gallery only);
* strangers: never enrolled, against a centre of `home_size` drawn people.

"district" is the verdict against the whole gallery (what a district-wide kiosk does without the rule);
"home only" is today's per-centre gallery (a visitor is then unknown by construction).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from edge.lab.kioskeval import KioskRun
from edge.recognition.decide import Policy, Verdict, decide_sequential

MIN_FRAMES = 3


def _tally(verdicts: Sequence[Verdict], truth: Sequence[str | None]) -> dict[str, int]:
    out = {"n": len(verdicts), "correct": 0, "wrong": 0, "confirm": 0, "unknown": 0}
    for v, t in zip(verdicts, truth, strict=True):
        if v.outcome == "accept":
            out["correct" if t is not None and v.senior_id == t else "wrong"] += 1
        else:
            out[v.outcome] += 1
    return out


def home_first(run: KioskRun, policy: Policy, home_size: int, seed: int = 0, max_frames: int = 5) -> dict[str, Any]:
    """Counts of outcomes per scenario (at_home, visiting, strangers) and per rule (district, home_first,
    home_only). For strangers, "wrong" counts any accept."""
    ids = run.gallery.senior_ids
    if home_size < 2 or home_size >= len(ids):
        raise ValueError(f"home size must be between 2 and {len(ids) - 1} (the gallery has {len(ids)} people)")
    rng = np.random.default_rng(seed)
    rules: dict[str, dict[str, list[Verdict]]] = {s: {"district": [], "home_first": [], "home_only": []}
                                                  for s in ("at_home", "visiting", "strangers")}
    truth: dict[str, list[str | None]] = {"at_home": [], "visiting": [], "strangers": []}

    def decide_in(home: Sequence[str], arr: np.ndarray) -> Verdict:
        g = run.gallery.only(home)
        members = set(home)
        pm = {k: m for k, m in run.pair_margins.items() if k <= members}
        v = decide_sequential(g, arr, policy, pm, min_frames=MIN_FRAMES, max_frames=max_frames)
        assert v is not None  # callers pass at least MIN_FRAMES frames
        return v

    def draw(n: int, exclude: str | None) -> list[str]:
        pool = [s for s in ids if s != exclude]
        return [pool[i] for i in rng.choice(len(pool), size=n, replace=False)]

    for pr, arr, district in zip(run.presences, run.frames, run.verdicts, strict=True):
        if len(arr) < MIN_FRAMES:
            continue  # no decision under any rule: the kiosk never saw enough of the face
        scenarios: list[tuple[str, list[str], str | None]]
        if pr.enrolled:
            scenarios = [("at_home", [pr.person, *draw(home_size - 1, pr.person)], pr.person),
                         ("visiting", draw(home_size, pr.person), pr.person)]
        else:
            scenarios = [("strangers", draw(home_size, None), None)]
        for name, home, t in scenarios:
            local = decide_in(home, arr)
            rules[name]["district"].append(district)
            rules[name]["home_first"].append(local if local.outcome == "accept" else district)
            rules[name]["home_only"].append(local)
            truth[name].append(t)
    return {
        "home_size": home_size,
        "gallery_people": len(ids),
        "seed": seed,
        "scenarios": {s: {r: _tally(v, truth[s]) for r, v in by_rule.items()} for s, by_rule in rules.items()},
    }


def format_home_first(r: dict[str, Any]) -> list[str]:
    lines = [
        f"home centre first: centres of {r['home_size']} people drawn from the {r['gallery_people']}-person gallery "
        f"(seed {r['seed']})",
        "",
        "| presences | rule | n | correct | WRONG | staff confirm | turned away |",
        "|---|---|---|---|---|---|---|",
    ]
    for s, by_rule in r["scenarios"].items():
        for rule, c in by_rule.items():
            if s == "visiting" and rule == "home_only":
                rule_name = "home only (visitor not enrolled here)"
            else:
                rule_name = rule.replace("_", " ")
            lines.append(f"| {s.replace('_', ' ')} | {rule_name} | {c['n']} | {c['correct']} | {c['wrong']} | "
                         f"{c['confirm']} | {c['unknown']} |")
    return lines
