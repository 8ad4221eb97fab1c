"""Who is enrolled, who is a stranger, and which photos become kiosk presences (`meal-edge eval`'s
kiosk-like protocol), drawn from file lists only.

The draw never looks at descriptors, so one seed gives the same people, enrolment photos and probe
photos for every model (dlib and SFace are compared on the same trials); a photo in which a model's
detector finds no face is then simply missing for that model (an enrolment photo gives no template,
a probe frame no descriptor).

* Enrolled people: drawn among identities with more than K photos; K photos each are enrolled, and up
  to `probes_per_person` of their other photos each become one kiosk presence.
* Strangers: drawn among the others; up to `stranger_photos` of their photos each become a presence.
* With `first` (slice identities), those people are drawn before anyone else, half of the eligible
  ones enrolled and the rest strangers, so small slices get as many trials as the set allows.
* Distractors: people of other sets (or of this set, when never drawn as enrolled or stranger), K
  photos each, added to the gallery until it holds `gallery_templates` templates. They are never
  probed and never share an identity with a probe (checked by name, across sets).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class PhotoSet:
    """A labelled face folder: identity -> photo paths (sorted), and how its pictures are prepared."""

    name: str
    root: Path
    photos: Mapping[str, Sequence[Path]]
    #: black border added on each side, as a fraction of the picture (tight crops need it)
    padding: float = 0.0


@dataclass(frozen=True)
class Presence:
    #: identity of the person in front of the kiosk
    person: str
    #: True when that person is enrolled
    enrolled: bool
    photo: Path


@dataclass(frozen=True)
class KioskTrial:
    #: senior id -> enrolment photo paths (probe-set people first, then distractors)
    enrolment: dict[str, tuple[Path, ...]]
    #: senior id -> the PhotoSet name it came from
    origin: dict[str, str]
    enrolled: tuple[str, ...]
    strangers: tuple[str, ...]
    distractors: tuple[str, ...]
    presences: tuple[Presence, ...]
    #: templates the gallery would hold if every enrolment photo had a face
    planned_templates: int


def distractor_id(set_name: str, person: str) -> str:
    """Senior id of a distractor: prefixed with its set, so two sets' folder names cannot collide."""
    return f"{set_name}:{person}"


def _shuffled(rng: np.random.Generator, items: Sequence[Path]) -> list[Path]:
    return [items[i] for i in rng.permutation(len(items))]


def build_kiosk_trial(
    probe_set: PhotoSet,
    gallery_size: int,
    photos_per_person: int,
    impostors: int,
    seed: int,
    *,
    probes_per_person: int = 2,
    stranger_photos: int = 2,
    first: frozenset[str] = frozenset(),
    distractor_sets: Sequence[PhotoSet] = (),
    gallery_templates: int | None = None,
) -> KioskTrial:
    if photos_per_person < 1 or gallery_size < 1 or impostors < 0:
        raise ValueError("gallery size and photos per person must be >= 1, impostors >= 0")
    if probes_per_person < 1 or stranger_photos < 1:
        raise ValueError("probes per person and stranger photos must be >= 1")
    rng = np.random.default_rng([seed, 0x4B10])
    names = sorted(probe_set.photos)
    eligible = {n for n in names if len(probe_set.photos[n]) > photos_per_person}
    if len(eligible) < gallery_size:
        raise ValueError(
            f"{probe_set.root}: only {len(eligible)} people have more than {photos_per_person} photos; "
            f"cannot enrol {gallery_size}"
        )
    order = [names[i] for i in rng.permutation(len(names))]
    head = [n for n in order if n in first]
    # half of the eligible slice people are enrolled, the other slice people are strangers
    head_eligible = [n for n in head if n in eligible]
    enrolled = head_eligible[: min(gallery_size, (len(head_eligible) + 1) // 2)]
    strangers = [n for n in head if n not in enrolled][:impostors]
    taken = set(enrolled) | set(strangers)
    for n in order:
        if len(enrolled) >= gallery_size:
            break
        if n in eligible and n not in taken:
            enrolled.append(n)
            taken.add(n)
    for n in order:
        if len(strangers) >= impostors:
            break
        if n not in taken:
            strangers.append(n)
            taken.add(n)

    enrolment: dict[str, tuple[Path, ...]] = {}
    origin: dict[str, str] = {}
    presences: list[Presence] = []
    for n in sorted(enrolled):
        photos = _shuffled(rng, probe_set.photos[n])
        enrolment[n] = tuple(photos[:photos_per_person])
        origin[n] = probe_set.name
        presences.extend(Presence(n, True, p) for p in photos[photos_per_person:][:probes_per_person])
    for n in sorted(strangers):
        photos = _shuffled(rng, probe_set.photos[n])
        presences.extend(Presence(n, False, p) for p in photos[:stranger_photos])

    probe_people = set(enrolled) | set(strangers)
    planned = sum(len(v) for v in enrolment.values())
    distractors: list[str] = []
    pool = [
        (s, n)
        for s in distractor_sets
        for n in sorted(s.photos)
        if n not in probe_people and not (s.root == probe_set.root and n in taken)
    ]
    limit = gallery_templates if gallery_templates is not None else float("inf")
    for i in rng.permutation(len(pool)):
        if planned >= limit:
            break
        s, n = pool[int(i)]
        sid = distractor_id(s.name, n)
        if sid in enrolment:
            continue
        photos = _shuffled(rng, s.photos[n])[:photos_per_person]
        take = photos[: max(1, min(len(photos), int(limit - planned)))] if limit != float("inf") else photos
        enrolment[sid] = tuple(take)
        origin[sid] = s.name
        distractors.append(sid)
        planned += len(take)
    if gallery_templates is not None and planned < gallery_templates:
        raise ValueError(
            f"the distractor sets hold too few people to fill the gallery to {gallery_templates} templates "
            f"(reached {planned}); add --distractors folders or ask for fewer templates"
        )
    return KioskTrial(
        enrolment,
        origin,
        tuple(sorted(enrolled)),
        tuple(sorted(strangers)),
        tuple(distractors),
        tuple(presences),
        planned,
    )
