"""Is a new senior's face already enrolled under another id? The enrolment duplicate rule, pure.

Enrolling one person twice is how one person could draw two subsidies, so enrolment refuses (unless
staff `--force`) a new senior whose photos show an enrolled senior. The check is 1:N against the whole
gallery, and since the district roster (issue 13) every kiosk holds the district's ~4,000 seniors. The old
rule fired when ANY photo was within 1.05 of ANY template, so a never-enrolled person was flagged more and
more often as the gallery grew (`meal-edge eval-dupcheck`, edge/lab/dupcheck.py; docs/accuracy.md, "Duplicate
check at district scale": 2.3% at 130 seniors, 15.5% at 923, about 52% at 4,000).

The photos must now agree on one senior: they are fused into one probe (the mean of the normalised photos,
edge.recognition.decide.fuse: what one photo gets wrong, the others outvote) and compared with each enrolled
senior's centroid (their templates averaged, as the kiosk scores too). A duplicate when the nearest senior is
within `distance` and nearer than the second nearest by at least `margin`. One stray photo close to some
lookalike among thousands no longer refuses an enrolment; a person enrolled again with other photos is close
to their own centroid with all of them. `combine="any"` is the old rule (each photo, each template).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from edge.recognition.decide import fuse, senior_distances
from edge.recognition.match import Gallery

Combine = Literal["fused", "any"]


@dataclass(frozen=True)
class DuplicateRule:
    #: the new photos' distance to an enrolled senior under which they show that senior
    distance: float
    #: that senior must be nearer than the second nearest senior by at least this much
    margin: float = 0.0
    #: "fused": the fused photos against each senior's centroid; "any": the nearest photo to the nearest
    #: template (the old rule, kept for the measurement)
    combine: Combine = "fused"


@dataclass(frozen=True)
class Duplicate:
    senior_id: str
    #: the distance to that senior (under the rule's distance)
    distance: float
    #: the second nearest senior's distance (2.0 when there is none)
    second_distance: float


def senior_scores(gallery: Gallery, embeddings: np.ndarray, combine: Combine) -> np.ndarray:
    """float64 [S]: each enrolled senior's distance from the new photos [n, 128] taken together."""
    e = np.atleast_2d(np.asarray(embeddings, np.float32))
    if combine == "fused":
        return senior_distances(gallery, fuse(e)[None], template_weight=0.0)[0]
    return gallery.senior_distances(e).astype(np.float64).min(axis=0)


def find_duplicate(scores: np.ndarray, senior_ids: tuple[str, ...], rule: DuplicateRule) -> Duplicate | None:
    """The enrolled senior the new photos show, or None. scores: [S] from senior_scores, in senior_ids order."""
    s = np.asarray(scores, np.float64).reshape(-1)
    if len(s) == 0:
        return None
    order = np.argsort(s, kind="stable")
    first = float(s[order[0]])
    second = float(s[order[1]]) if len(order) > 1 else 2.0
    if first >= rule.distance or second - first < rule.margin:
        return None
    return Duplicate(senior_ids[int(order[0])], first, second)


def duplicate_in(gallery: Gallery, embeddings: np.ndarray, rule: DuplicateRule) -> Duplicate | None:
    """find_duplicate against a gallery (the senior being enrolled already taken out of it)."""
    if len(gallery) == 0 or len(embeddings) == 0:
        return None
    return find_duplicate(senior_scores(gallery, embeddings, rule.combine), gallery.senior_ids, rule)
