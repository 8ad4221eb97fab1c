"""Prometheus metrics of one serve process (prometheus_client, its own registry)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from district.store import BatchResult


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.ingested = Counter("meal_district_events_ingested", "meal events stored (first copy)", registry=r)
        self.duplicates = Counter("meal_district_duplicates", "identical copies of stored events, ignored", registry=r)
        self.conflicts = Counter("meal_district_conflicts",
                                 "copies of a stored event_id with different bytes (kept aside)", registry=r)
        self.quarantined = Counter("meal_district_quarantined", "payloads quarantined, by kind of reason",
                                   ["reason"], registry=r)
        self.statuses = Counter("meal_district_status_messages", "kiosk status messages", registry=r)
        self.batches = Counter("meal_district_batches", "transactions committed", registry=r)
        self.db_errors = Counter("meal_district_database_errors", "failed batch commits (retried)", registry=r)
        self.delay = Histogram("meal_district_ingest_delay_seconds", "received from the broker -> committed",
                               buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60), registry=r)
        self.gaps_open = Gauge("meal_district_gaps_open", "open sequence gaps (missing event ranges)", registry=r)
        self.kiosks = Gauge("meal_district_kiosks", "kiosks by last reported state", ["state"], registry=r)
        self.flags = Gauge("meal_district_adjustments", "meals flagged for claw-back, by reason", ["reason"],
                           registry=r)

    def record(self, res: BatchResult) -> None:
        self.batches.inc()
        self.ingested.inc(res.stored)
        self.duplicates.inc(res.duplicates)
        self.conflicts.inc(res.conflicts)
        self.statuses.inc(res.statuses)
        for reason in res.quarantine_reasons:
            self.quarantined.labels(reason_kind(reason)).inc()
        for d in res.delays:
            self.delay.observe(max(0.0, d))


def reason_kind(reason: str) -> str:
    """A label with few values: the words before the first colon or number ('oversized', 'not JSON', ...)."""
    head = reason.split(":", 1)[0]
    words = []
    for w in head.split():
        if w[0].isdigit() or w.startswith(("'", '"', "{", "[")):
            break
        words.append(w)
    return " ".join(words[:6]) or "other"
