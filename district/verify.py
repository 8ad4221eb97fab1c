"""Signature and chain checks of schema-2 events, through edge.security.signing (the Event contract v2 API).

The signing module is owned by the security work; everything the district needs from it passes through
this seam, so the rest of the server does not care whether it is installed. Without it a signed event
cannot be verified and is quarantined as unverifiable (never accepted unchecked).
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Mapping
from functools import cache
from types import ModuleType
from typing import Any

log = logging.getLogger(__name__)


@cache
def signing() -> ModuleType | None:
    try:
        return importlib.import_module("edge.security.signing")
    except ImportError:
        log.warning("edge.security.signing is not installed: signed events cannot be verified and are quarantined")
        return None


class KeyError_(ValueError):
    """A registered public key that cannot be read."""


@cache
def _public_key(text: str) -> Any:
    mod = signing()
    if mod is None:
        raise KeyError_("edge.security.signing is not installed")
    try:
        return mod.public_key_from_text(text)
    except Exception as e:  # the library's own error types for a bad key
        raise KeyError_(f"registered public key cannot be read: {e}") from e


def check_public_key(text: str) -> str:
    """The key in the form the district stores (base64 of the raw 32 bytes); raises KeyError_."""
    mod = signing()
    if mod is None:
        raise KeyError_("edge.security.signing is not installed: cannot read public keys")
    return str(mod.public_key_text(_public_key(text.strip())))


def verify(event: Mapping[str, Any], key_text: str | None) -> str | None:
    """None when the signature verifies against the kiosk's key, else the reason it is unverifiable."""
    mod = signing()
    if mod is None:
        return "unverifiable: signature checks are not installed (edge.security.signing)"
    if not key_text:
        return "unverifiable: no public key registered for this kiosk (meal-district kiosk register)"
    try:
        key = _public_key(key_text)
    except KeyError_ as e:
        return f"unverifiable: {e}"
    try:
        mod.verify_event(event, key)
    except mod.SignatureError as e:
        return f"bad signature: {e}"
    except (ValueError, TypeError) as e:
        return f"bad signature: {e}"
    return None


def event_hash(event: Mapping[str, Any]) -> str | None:
    """The chain hash of a signed event (None for unsigned events or without the signing module)."""
    mod = signing()
    if mod is None or "sig" not in event:
        return None
    try:
        return str(mod.event_hash(event))
    except (ValueError, TypeError):
        return None
