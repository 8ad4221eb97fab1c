"""The real kiosk side of the roster link for tests: a kiosk config with [roster] on, and a kiosk (store,
event publisher, roster link) started in the test process, as `meal-edge run` wires them."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path

from conftest import MosquittoBroker
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge.config import DEFAULT_CONFIG, Config, parse_config
from edge.delivery.publish import Publisher
from edge.delivery.rostersync import RosterLink, load_keys
from edge.store import Store

#: each kiosk's signing key (one per store, as `meal-edge keys init` makes it)
KEYS: dict[str, Ed25519PrivateKey] = {}


def kiosk_key(cfg: Config) -> Ed25519PrivateKey:
    return KEYS.setdefault(str(cfg.store_path), Ed25519PrivateKey.generate())


def kiosk_config(broker: MosquittoBroker, folder: Path, district_key: str, transport_key: bytes | Path,
                 centre: str = "centre-001", kiosk: str = "kiosk-1", extra: Callable[[str], str] = lambda t: t
                 ) -> Config:
    """`transport_key`: the key (written to roster.key, 0600) or the district's key file."""
    folder.mkdir(parents=True, exist_ok=True)
    if isinstance(transport_key, Path):
        tk = transport_key
    else:
        tk = folder / "roster.key"
        tk.write_bytes(transport_key.hex().encode() + b"\n")
        os.chmod(tk, 0o600)
    text = extra(
        DEFAULT_CONFIG.replace("port = 1883", f"port = {broker.port}")
        .replace('[store]\npath = ""', '[store]\npath = "store.sqlite"')
        .replace('id = "centre-001" ', f'id = "{centre}" ').replace('kiosk_id = "kiosk-1" ', f'kiosk_id = "{kiosk}" ')
        .replace("over the [mqtt] connection.\nenabled = false", "over the [mqtt] connection.\nenabled = true")
        .replace('district_key = ""', f'district_key = "{district_key}"')
        .replace('transport_key_file = ""', f'transport_key_file = "{tk}"')
        .replace("poll_seconds = 1.0", "poll_seconds = 0.1")
    )
    path = folder / "meal-edge.toml"
    path.write_text(text)
    cfg = parse_config(text, path)
    assert cfg.centre.id == centre and cfg.centre.kiosk_id == kiosk and cfg.roster.enabled
    return cfg


def wait_until(cond: Callable[[], bool], timeout: float, what: str) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if cond():
            return time.monotonic() - t0
        time.sleep(0.01)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@dataclass
class Kiosk:
    cfg: Config
    store: Store
    publisher: Publisher
    link: RosterLink
    #: when the link said the roster changed (time.monotonic())
    changes: list[float]

    def stop(self) -> None:
        self.link.stop()
        self.publisher.stop(timeout=1.0)


def start_kiosk(cfg: Config, model_id: str, store: Store | None = None,
                on_change: Callable[[Collection[str] | None], None] | None = None) -> Kiosk:
    """The kiosk's publisher and roster link on its store, as `meal-edge run` wires them."""
    store = store or Store(cfg.store_path)
    pub = Publisher(store, cfg.mqtt_link, cfg.centre, poll_interval=0.1, reconnect_max_delay=1)
    changes: list[float] = []

    def changed(seniors: Collection[str] | None) -> None:
        changes.append(time.monotonic())
        if on_change is not None:
            on_change(seniors)

    link = RosterLink(store, cfg, load_keys(cfg), kiosk_key(cfg), model_id, on_change=changed, resend_after=2.0)
    link.attach(pub)
    pub.start()
    link.start()
    return Kiosk(cfg, store, pub, link, changes)
