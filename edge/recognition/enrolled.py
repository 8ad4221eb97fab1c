"""The kiosk's live gallery: the enrolled templates recognition matches against, rebuilt from the store when
enrolment or the district roster changes them (edge/app.py wires it into the pipeline).

`GalleryHolder` reads the store through `EnrolmentSource` (what edge.store.Store offers), so this module
stays below the store in the layer order (scripts/check_imports.py).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Collection
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from edge.recognition.decide import Policy, lookalike_pairs, lookalike_pairs_touching
from edge.recognition.match import Gallery

log = logging.getLogger(__name__)


class EnrolmentSource(Protocol):
    """What the gallery reads from the store (edge.store.Store)."""

    def signature(self) -> tuple[object, ...]: ...

    def templates(
        self, model_id: str | None = None, seniors: Collection[str] | None = None
    ) -> list[tuple[str, np.ndarray]]: ...

    def seniors_only_in_other_models(self, model_id: str) -> dict[str, int]: ...


@dataclass(frozen=True)
class Enrolled:
    """What recognition needs from enrolment, swapped as one reference so no decision sees half an update."""

    gallery: Gallery
    #: lookalike pairs (siblings, twins) and the margin each needs before an automatic accept
    pair_margins: dict[frozenset[str], float]


def unrecognisable(n: int, other_model: str, model_id: str) -> str:
    """What the kiosk (at every gallery load) and `check-config` say about seniors enrolled only for
    another model."""
    return (
        f"{n} seniors have face templates only for model {other_model}, not for this kiosk's model {model_id}: "
        "they cannot be recognised. Re-enrol their photos (meal-enroll add/import/capture), or set "
        "[recognition] model and mirror to match how they were enrolled"
    )


class GalleryHolder:
    """The live gallery, rebuilt from the store when enrolment changes it. Senior records (status,
    birth date, hukou) are not cached: the rules read them from the store at each decision, so a
    suspension takes effect at once."""

    def __init__(self, store: EnrolmentSource, policy: Policy, check_every: float = 10.0) -> None:
        self.store = store
        self.policy = policy
        self.model_id = policy.model_id
        self.check_every = check_every
        self._signature: object = None
        self._checked = float("-inf")
        self._reloading = threading.Lock()
        self._pending_lock = threading.Lock()
        #: seniors changed since the last rebuild (None: unknown, rebuild everything)
        self._pending: set[str] | None = set()
        self._poked = False
        self.current = Enrolled(Gallery.empty(self.model_id), {})
        self.reload()

    def reload(self) -> None:
        sig = self.store.signature()
        gallery = Gallery.from_pairs(self.store.templates(self.model_id), self.model_id)
        pairs = lookalike_pairs(gallery, self.policy)
        for other, n in self.store.seniors_only_in_other_models(self.model_id).items():
            # Loud, at every reload: these seniors would be turned away without anyone knowing why.
            log.error("%s", unrecognisable(n, other, self.model_id))
        self.current = Enrolled(gallery, pairs)
        self._signature = sig
        self._checked = time.monotonic()
        log.info(
            "gallery: %d seniors, %d templates, %d lookalike pairs (model %s)",
            len(gallery), gallery.n_templates, len(pairs), self.model_id,
        )

    def poke(self, seniors: Collection[str] | None = None) -> None:
        """The roster link changed the store (edge/delivery/rostersync.py): rebuild now, in the background, rather
        than at the next check; a reload already running rebuilds once more when it ends. `seniors`: the ones
        changed, when known: only their templates are read again and only their lookalike pairs recomputed
        (a district gallery of 5,000 seniors takes seconds to rebuild whole, one senior milliseconds)."""
        with self._pending_lock:
            if seniors is None or self._pending is None:
                self._pending = None
            else:
                self._pending |= set(seniors)
            self._poked = True
        self._checked = float("-inf")
        self.maybe_reload()

    def _take_pending(self) -> set[str] | None:
        with self._pending_lock:
            pending, self._pending = self._pending, set()
            self._poked = False
            return pending

    def refresh(self, seniors: Collection[str]) -> None:
        """Rebuild the gallery for `seniors` only (their templates re-read, their lookalike pairs recomputed)."""
        changed = set(seniors)
        sig = self.store.signature()
        old = self.current
        g = old.gallery
        mine = [i for i, sid in enumerate(g.senior_ids) if sid in changed]
        keep = ~np.isin(g.owner, mine)
        pairs = [(g.senior_ids[o], t) for o, t in zip(g.owner[keep].tolist(), g.templates[keep], strict=True)]
        gallery = Gallery.from_pairs(pairs + self.store.templates(self.model_id, seniors=changed), self.model_id)
        margins = {p: m for p, m in old.pair_margins.items() if not p & changed}
        margins.update(lookalike_pairs_touching(gallery, self.policy, changed))
        self.current = Enrolled(gallery, margins)
        self._signature = sig
        self._checked = time.monotonic()
        log.info("gallery: %d seniors changed, %d seniors, %d templates, %d lookalike pairs", len(changed),
                 len(gallery), gallery.n_templates, len(margins))

    def maybe_reload(self) -> None:
        """Called every frame; at most every `check_every` s it asks the store whether enrolment changed,
        and rebuilds in a background thread (a district-sized gallery takes seconds) so check-in never
        waits; the swap in reload() is one assignment."""
        if time.monotonic() - self._checked < self.check_every or self._reloading.locked():
            return
        self._checked = time.monotonic()
        if self._poked or self.store.signature() != self._signature:
            threading.Thread(target=self._reload_in_background, name="gallery-reload", daemon=True).start()

    def _reload_in_background(self) -> None:
        with self._reloading:
            while True:
                pending = self._take_pending()
                try:
                    # a few seniors changed by the roster link: only theirs; else (enrolment in another process,
                    # a large batch, nothing known) the whole gallery
                    if pending and len(pending) <= max(50, len(self.current.gallery) // 10):
                        self.refresh(pending)
                    else:
                        self.reload()
                except Exception:  # a failed reload keeps the old gallery working; the next check retries
                    log.exception("gallery reload failed; keeping the previous gallery")
                    return
                if not self._poked:
                    break
        if self._poked:  # poked between the last look and the release of the lock
            self._checked = float("-inf")
            self.maybe_reload()
