"""Face templates encrypted at rest: AES-256-GCM under a key kept outside the database.

A copied store file (a backup, a stolen SD card image, a support bundle) must not yield anyone's biometric
template. Each template is sealed on its own:

    blob = VERSION (1 byte) || nonce (12 random bytes) || AES-GCM(key, nonce, plaintext, aad)

with associated data naming the senior and the template row, so a ciphertext moved to another row or
another senior (to be recognised as them) fails to decrypt instead of matching. The key is 32 random bytes,
kept either as a systemd credential (`LoadCredential=meal-edge-template-key:...`, read from
`$CREDENTIALS_DIRECTORY`) or in a file beside the store, created 0600 on first use. Losing the key loses
the templates (seniors must then be enrolled again); it is never re-created while encrypted templates exist
(the store checks that before asking for a new one).

Standalone on purpose: imports nothing from edge (see the package layout in the README).
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from edge.security.secrets import write_new_secret

log = logging.getLogger(__name__)

KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
VERSION = 1
#: the systemd credential name looked up in $CREDENTIALS_DIRECTORY before the key file
CREDENTIAL_NAME = "meal-edge-template-key"
_AAD_PREFIX = b"meal-edge/template/1\x00"


class AtRestError(RuntimeError):
    """A key or a sealed template that cannot be used, phrased for the operator."""


def sealed_size(plain_size: int) -> int:
    """Bytes stored for `plain_size` bytes of plaintext."""
    return 1 + NONCE_BYTES + plain_size + TAG_BYTES


def _aad(kind: str, senior_id: str, record_id: int) -> bytes:
    return _AAD_PREFIX + kind.encode() + b"\x00" + senior_id.encode("utf-8") + b"\x00" + str(record_id).encode()


class TemplateCipher:
    """Seals and opens one record (a template, or a kept enrolment photo) bound to its senior and row."""

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise AtRestError(f"the template key must be {KEY_BYTES} bytes, not {len(key)}")
        self._aes = AESGCM(key)

    def seal(self, plain: bytes, senior_id: str, record_id: int, kind: str = "template") -> bytes:
        nonce = os.urandom(NONCE_BYTES)  # random per record: 2^-32 collision bound is far beyond our counts
        return bytes([VERSION]) + nonce + self._aes.encrypt(nonce, plain, _aad(kind, senior_id, record_id))

    def open(self, blob: bytes, senior_id: str, record_id: int, kind: str = "template") -> bytes:
        if len(blob) < sealed_size(0) or blob[0] != VERSION:
            raise AtRestError(f"{kind} {record_id} of {senior_id!r} is not a sealed record (plaintext or damaged)")
        nonce, body = blob[1 : 1 + NONCE_BYTES], blob[1 + NONCE_BYTES :]
        try:
            return self._aes.decrypt(nonce, body, _aad(kind, senior_id, record_id))
        except InvalidTag:
            raise AtRestError(
                f"{kind} {record_id} of {senior_id!r} does not decrypt: altered, moved from another row, "
                "or sealed under another key"
            ) from None


def _parse_key(data: bytes, where: str) -> bytes:
    """32 raw bytes, or their base64 / hex text (what `systemd-creds` or an operator may write)."""
    if len(data) == KEY_BYTES:
        return data
    text = data.strip()
    for decode in (lambda t: base64.b64decode(t, validate=True), binascii.unhexlify):
        try:
            key = decode(text)
        except (ValueError, binascii.Error):
            continue
        if len(key) == KEY_BYTES:
            return key
    raise AtRestError(
        f"{where}: not a template key ({len(data)} bytes; expected {KEY_BYTES} random bytes, or their base64 "
        "or hex text): restore the right key from the backup"
    )


def credential_path(name: str = CREDENTIAL_NAME) -> Path | None:
    """The systemd credential file, when the service was started with LoadCredential= for it."""
    folder = os.environ.get("CREDENTIALS_DIRECTORY")
    if not folder:
        return None
    p = Path(folder) / name
    return p if p.is_file() else None


def key_exists(path: Path, credential: str = CREDENTIAL_NAME) -> bool:
    return credential_path(credential) is not None or path.exists()


def load_key(path: Path, credential: str = CREDENTIAL_NAME) -> bytes:
    """The key from the systemd credential, else from `path`. AtRestError when neither exists."""
    cred = credential_path(credential)
    if cred is not None:
        return _parse_key(cred.read_bytes(), str(cred))
    try:
        st = path.stat()
        data = path.read_bytes()
    except FileNotFoundError:
        raise AtRestError(
            f"{path}: the template key is missing, so the face templates cannot be read: restore it from the "
            f"backup (or give it as the systemd credential {credential!r}); only if it is lost for good, "
            "start a new store and enrol everyone again"
        ) from None
    except OSError as e:
        raise AtRestError(f"{path}: cannot read the template key ({e.strerror})") from None
    if st.st_mode & 0o077:
        # readable by others: tighten it (ours) rather than refuse a kiosk's start over it
        try:
            os.chmod(path, 0o600)
            log.warning("template key %s was readable by other users: now 0600", path)
        except OSError as e:
            raise AtRestError(f"{path}: the template key is readable by other users and cannot be fixed: {e}") from e
    return _parse_key(data, str(path))


def load_or_create_key(path: Path, credential: str = CREDENTIAL_NAME) -> bytes:
    """The key (as load_key); when there is none yet, 32 new random bytes written to `path`, mode 0600, in a
    0700 folder. Two processes starting at once end up with the same key (link() refuses to overwrite)."""
    if key_exists(path, credential):
        return load_key(path, credential)
    folder = path.parent
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = os.urandom(KEY_BYTES)
    if not write_new_secret(path, base64.b64encode(key) + b"\n", prefix=f".{path.name}."):
        return load_key(path, credential)  # another process made it first: use theirs
    log.info("created the template key %s (0600): back it up with the store", path)
    return key
