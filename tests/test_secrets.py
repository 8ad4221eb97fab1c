"""Secrets from files and systemd credentials (edge/security/secrets.py): private files only, the value
never in an error message or the log."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from edge.security.secrets import SecretError, credential_path, read_secret

VALUE = "s3cr3t-Pa55"


def secret_file(folder: Path, name: str = "pw", text: str = VALUE + "\n", mode: int = 0o600) -> Path:
    p = folder / name
    p.write_text(text)
    os.chmod(p, mode)
    return p


def test_reads_a_private_file(tmp_path: Path) -> None:
    assert read_secret(file=secret_file(tmp_path)) == VALUE
    assert read_secret(file=secret_file(tmp_path, text=VALUE + "\r\n", mode=0o400)) == VALUE
    assert read_secret(file=secret_file(tmp_path, text=VALUE, mode=0o640)) == VALUE  # group: the service's
    assert read_secret(file=secret_file(tmp_path, text=" x \n\n")) == " x \n"  # only one newline is taken off


@pytest.mark.parametrize("mode,match", [(0o644, "readable by every user"), (0o604, "readable by every user"),
                                        (0o620, "writable by others"), (0o602, "writable by others")])
def test_refuses_files_others_can_read_or_write(tmp_path: Path, mode: int, match: str,
                                                caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    p = secret_file(tmp_path, mode=mode)
    with pytest.raises(SecretError, match=match) as e:
        read_secret(file=p, what="[mqtt] password_file")
    assert str(p) in str(e.value) and "[mqtt] password_file" in str(e.value)
    assert VALUE not in str(e.value) and VALUE not in caplog.text


def test_refuses_missing_empty_odd_files(tmp_path: Path) -> None:
    with pytest.raises(SecretError, match="not found"):
        read_secret(file=tmp_path / "nope")
    with pytest.raises(SecretError, match="empty"):
        read_secret(file=secret_file(tmp_path, text="\n"))
    with pytest.raises(SecretError, match="not a regular file"):
        read_secret(file=tmp_path)
    with pytest.raises(SecretError, match="not a secret"):
        read_secret(file=secret_file(tmp_path, text="x" * 70_000))
    p = tmp_path / "bin"
    p.write_bytes(b"\xff\xfe")
    os.chmod(p, 0o600)
    with pytest.raises(SecretError, match="not UTF-8"):
        read_secret(file=p)
    with pytest.raises(SecretError, match="either a file or"):
        read_secret()
    with pytest.raises(SecretError, match="either a file or"):
        read_secret(file=p, credential="x")


def test_systemd_credential(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    creds = tmp_path / "credentials"
    creds.mkdir()
    secret_file(creds, "mqtt-password", mode=0o400)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    assert read_secret(credential="mqtt-password") == VALUE
    assert credential_path("mqtt-password") == creds / "mqtt-password"
    with pytest.raises(SecretError, match="credential 'other'.*not found"):
        read_secret(credential="other")
    for bad in ("../etc/shadow", "a/b", "..", ""):
        with pytest.raises(SecretError, match="not a credential name"):
            read_secret(credential=bad)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY")
    with pytest.raises(SecretError, match="LoadCredential=mqtt-password:"):
        read_secret(credential="mqtt-password")
