"""`meal-edge keys init|show`: the kiosk's Ed25519 signing key (docs/events.md "Signature and chain").

The key lives in the state folder, beside the store (`signing.key`, 0600). `init` makes it once and never
replaces it; both print the public key text the district registers for this kiosk.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge.config import Config, need_config
from edge.security.signing import KeyFileError, create_key, load_key, public_key_text
from edge.store.signer import key_path_for

EXIT_OK, EXIT_FAIL = 0, 1


def kiosk_key(cfg: Config) -> Ed25519PrivateKey:
    """The kiosk's key for `run`; KeyFileError (phrased for the operator) if it is missing or unsafe."""
    return load_key(key_path_for(cfg.store_path))


def _print_registration(cfg: Config, key: Ed25519PrivateKey) -> None:
    c = cfg.centre
    print(f"kiosk {c.district}/{c.id}/{c.kiosk_id}")
    print(f"public key (register it with the district): {public_key_text(key.public_key())}")


def cmd_keys(args: argparse.Namespace) -> int:
    cfg = need_config(args.config)
    path = key_path_for(cfg.store_path)
    try:
        if args.action == "init":
            if path.exists() or path.is_symlink():
                key = load_key(path)
                print(f"{path}: this kiosk already has a signing key; it is kept (never replaced)", file=sys.stderr)
            else:
                key = create_key(path)
                print(f"{path}: new signing key made (0600)", file=sys.stderr)
        else:
            key = load_key(path)
    except KeyFileError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_FAIL
    _print_registration(cfg, key)
    return EXIT_OK


def add_parser(sub: Any) -> None:
    s = sub.add_parser("keys", help="the kiosk's event signing key: make it (init) or print its public key (show)")
    s.add_argument("action", choices=("init", "show"),
                   help="init: make the key in the state folder if there is none; show: print the public key")
    s.set_defaults(func=cmd_keys)
