"""The district's roster keys: where they are, making them (`meal-district keys roster-init`), loading them.

- the roster signing key (Ed25519, PEM): signs every down/roster and down/acks message; its public half goes
  into each kiosk's `[roster] district_key`;
- the roster transport key (32 bytes, base64 text): seals templates in transit, shared with the kiosks;
- the template key (32 bytes): seals the templates at rest in the district database (TemplateCipher).

Each is a systemd credential when the service has one ($CREDENTIALS_DIRECTORY/<name>), else the configured
file, else a file in the state folder. Secrets are never printed or logged (only the public key is).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from district.config import Config, secret_path
from district.paths import state_dir
from edge.delivery import rosterwire as rw
from edge.security import atrest, signing
from edge.security.secrets import write_new_secret

log = logging.getLogger(__name__)

SIGNING_CREDENTIAL = "meal-district-roster-key"
TEMPLATE_CREDENTIAL = "meal-district-template-key"


class RosterKeyError(RuntimeError):
    """A roster key that is missing or unusable, phrased for the operator."""


def _credential(name: str) -> Path | None:
    folder = os.environ.get("CREDENTIALS_DIRECTORY")
    if folder and (Path(folder) / name).is_file():
        return Path(folder) / name
    return None


def _path(cfg: Config, configured: str, credential: str, default: str) -> Path:
    if cred := _credential(credential):
        return cred
    if configured:
        return secret_path(configured, cfg)
    return state_dir() / default


def signing_key_path(cfg: Config) -> Path:
    return _path(cfg, cfg.roster.signing_key_file, SIGNING_CREDENTIAL, "roster-signing.key")


def transport_key_path(cfg: Config) -> Path:
    return _path(cfg, cfg.roster.transport_key_file, rw.TRANSPORT_CREDENTIAL, "roster-transport.key")


def template_key_path(cfg: Config) -> Path:
    return _path(cfg, cfg.roster.template_key_file, TEMPLATE_CREDENTIAL, "roster-template.key")


@dataclass(frozen=True)
class RosterKeys:
    signing: Ed25519PrivateKey
    transport: bytes
    cipher: atrest.TemplateCipher

    @property
    def public_text(self) -> str:
        return signing.public_key_text(self.signing.public_key())


def load_template_cipher(cfg: Config) -> atrest.TemplateCipher:
    try:
        return atrest.TemplateCipher(atrest.load_key(template_key_path(cfg), TEMPLATE_CREDENTIAL))
    except atrest.AtRestError as e:
        raise RosterKeyError(f"{e} (meal-district keys roster-init makes the roster keys)") from e


def load_keys(cfg: Config) -> RosterKeys:
    """All three keys; RosterKeyError naming the missing one and what to do."""
    try:
        key = signing.load_key(signing_key_path(cfg))
    except signing.KeyFileError as e:
        raise RosterKeyError(f"roster signing key: {e} (make it with `meal-district keys roster-init`)") from e
    try:
        transport = rw.read_transport_key(transport_key_path(cfg))
    except rw.WireError as e:
        raise RosterKeyError(f"{e} (make it with `meal-district keys roster-init`)") from e
    return RosterKeys(key, transport, load_template_cipher(cfg))


def _write_new(path: Path, data: bytes) -> bool:
    """Write a 0600 file that must not exist yet; False (and kept) when it does."""
    if path.exists():
        return False
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    return write_new_secret(path, data, prefix=".roster-key-")


@dataclass(frozen=True)
class InitResult:
    public_key: str
    made: list[str]
    kept: list[str]
    transport_path: Path


def roster_init(cfg: Config) -> InitResult:
    """Make whichever roster keys do not exist yet (never replaces one); the signing key's public text."""
    made: list[str] = []
    kept: list[str] = []
    sp = signing_key_path(cfg)
    existed = sp.exists()
    try:
        key = signing.load_or_create_key(sp)
    except signing.KeyFileError as e:
        raise RosterKeyError(str(e)) from e
    (kept if existed else made).append(f"signing key {sp}")
    tp = transport_key_path(cfg)
    if _write_new(tp, rw.new_transport_key_text().encode() + b"\n"):
        made.append(f"transport key {tp}")
    else:
        kept.append(f"transport key {tp}")
    try:
        rw.read_transport_key(tp)
    except rw.WireError as e:
        raise RosterKeyError(str(e)) from e
    kp = template_key_path(cfg)
    existed = atrest.key_exists(kp, TEMPLATE_CREDENTIAL)
    try:
        atrest.load_or_create_key(kp, TEMPLATE_CREDENTIAL)
    except atrest.AtRestError as e:
        raise RosterKeyError(str(e)) from e
    (kept if existed else made).append(f"template key {kp}")
    return InitResult(signing.public_key_text(key.public_key()), made, kept, tp)
