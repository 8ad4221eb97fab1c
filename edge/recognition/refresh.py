"""Template refresh: keep a senior's gallery current from their own confident check-ins (off by default).

Seniors age, start wearing glasses, lose weight when ill: enrolment photos go stale. With
`[recognition] refresh_templates = true`, a presence that ended in an *automatic* meal, with a match
much closer and clearer than the accept rule needs, stores its fused descriptor as one more template of
that senior (`source = "checkin:<event_id>"`). The danger is a wrong accept poisoning a senior's templates
(the next wrong accept then becomes easier), so the gate is deliberately narrow: only automatic meals
(never staff-confirmed ones, repeats, unknown or confirm), liveness confirmed when it is enabled, a
distance and a margin stricter than the calibrated accept rule, at most one refresh per senior per
`refresh_every_days`, and at most `refresh_max` check-in templates per senior (the oldest is replaced).
Photo templates from enrolment are never touched.

This module only decides; `edge.app.Pipeline` stores (one transaction, `Store.add_checkin_template`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

#: a template whose source starts with this came from a check-in, not from an enrolment photo
CHECKIN_SOURCE_PREFIX = "checkin:"

# reasons a check-in does not refresh (refresh_reasons lists every one that applies)
OFF = "refresh_off"
NOT_AUTOMATIC_MEAL = "not_automatic_meal"
NOT_LIVE = "liveness_not_confirmed"
TOO_FAR = "distance_above_refresh_distance"
SMALL_MARGIN = "margin_below_refresh_min_margin"
TOO_SOON = "refreshed_recently"
NO_PROBE = "no_descriptor"


def checkin_source(event_id: str) -> str:
    return f"{CHECKIN_SOURCE_PREFIX}{event_id}"


def is_checkin_source(source: str) -> bool:
    return source.startswith(CHECKIN_SOURCE_PREFIX)


@dataclass(frozen=True)
class RefreshRule:
    """The `[recognition] refresh_*` keys."""

    enabled: bool = False
    max_templates: int = 2
    max_distance: float = 0.20
    min_margin: float = 0.20
    every_days: float = 30.0


@dataclass(frozen=True)
class CheckIn:
    """What the pipeline knows about one decided presence, as far as a refresh is concerned."""

    #: the decision's kind: only "meal" may refresh (never repeat, unknown, confirm, refused, error)
    kind: str
    #: False for a meal confirmed by staff: only the kiosk's own accepts count
    automatic: bool
    liveness_enabled: bool
    #: the liveness verdict of the presence: True live, False not live, None not assessed
    live: bool | None
    #: fused distance and margin of the verdict
    distance: float
    margin: float
    #: aware datetimes: the decision time and when the senior's newest check-in template was stored
    now: datetime
    last_refresh: datetime | None
    #: the presence's fused descriptor is at hand
    has_probe: bool = True


def refresh_reasons(rule: RefreshRule, c: CheckIn) -> tuple[str, ...]:
    """Every reason this check-in must not refresh the senior's templates; empty: refresh."""
    out: list[str] = []
    if not rule.enabled:
        out.append(OFF)
    if c.kind != "meal" or not c.automatic:
        out.append(NOT_AUTOMATIC_MEAL)
    if c.liveness_enabled and c.live is not True:
        out.append(NOT_LIVE)
    if not c.distance <= rule.max_distance:  # written so that NaN refuses too
        out.append(TOO_FAR)
    if not c.margin >= rule.min_margin:
        out.append(SMALL_MARGIN)
    if c.last_refresh is not None and c.now - c.last_refresh < timedelta(days=rule.every_days):
        out.append(TOO_SOON)
    if not c.has_probe:
        out.append(NO_PROBE)
    return tuple(out)


def should_refresh(rule: RefreshRule, c: CheckIn) -> bool:
    return not refresh_reasons(rule, c)


def scale_warning(enabled: bool, model: str) -> str | None:
    """Why the refresh thresholds ([recognition] refresh_*) do not fit the configured face model, or None."""
    if not enabled or model == "dlib":
        return None
    return (
        "[recognition] refresh_templates is on, but refresh_distance and refresh_min_margin are on dlib's "
        f"distance scale, not calibrated for model {model!r}: its same-person distances are wider "
        "(median ~0.7 from a 3-photo template on LFW), so it would refresh almost never (issue 10)"
    )
