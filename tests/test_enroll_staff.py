"""`meal-enroll staff add|list|remove` and the audit lines of enrolment commands (issue 12, item 3), on a real
store. The PIN comes from a prompt, a file or standard input, never from the command line."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest
from test_enroll_cli import write_config

from edge.security.staffauth import StaffAuth
from edge.store import Store
from enroll.cli import main


def _db(tmp_path: Path) -> Path:
    return tmp_path / "state" / "meal.sqlite"


def test_staff_accounts_are_added_listed_and_removed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = write_config(tmp_path)
    monkeypatch.setattr(sys, "stdin", io.StringIO("482913\n"))
    assert main(["--config", cfg, "staff", "add", "w01", "--name", "李娜", "--pin-file", "-"]) == 0
    assert "added staff account w01 (staff)" in capsys.readouterr().out
    pin = tmp_path / "pin"
    pin.write_text("s3cret-pass\n", encoding="utf-8")
    assert main(["--config", cfg, "staff", "add", "m01", "--name", "Zhao", "--role", "manager",
                 "--pin-file", str(pin)]) == 0  # fmt: skip
    capsys.readouterr()
    # refused: a short PIN, a taken id, a bad id; a PIN given as an argument is not even an option
    monkeypatch.setattr(sys, "stdin", io.StringIO("123\n"))
    assert main(["--config", cfg, "staff", "add", "w02", "--name", "x", "--pin-file", "-"]) == 1
    assert "6 to 128 characters" in capsys.readouterr().out
    monkeypatch.setattr(sys, "stdin", io.StringIO("482913\n"))
    assert main(["--config", cfg, "staff", "add", "w01", "--name", "x", "--pin-file", "-"]) == 1
    assert "already taken" in capsys.readouterr().out
    assert main(["--config", cfg, "staff", "add", "w03", "--name", "x", "--pin", "482913"]) == 2
    capsys.readouterr()

    assert main(["--config", cfg, "staff", "list"]) == 0
    out = capsys.readouterr().out
    assert "w01" in out and "李娜" in out and "m01" in out and "manager" in out and "482913" not in out
    with Store(_db(tmp_path)) as s:
        acct = s.get_staff("w01")
        assert acct is not None and acct.secret_hash.startswith("$argon2id$")
        assert StaffAuth(s).authenticate("w01", "482913").name == "李娜"
        assert StaffAuth(s).authenticate("m01", "s3cret-pass").role == "manager"
    raw = b"".join(p.read_bytes() for p in _db(tmp_path).parent.iterdir() if p.is_file())
    assert b"482913" not in raw and b"s3cret-pass" not in raw

    assert main(["--config", cfg, "staff", "remove", "w01"]) == 0
    assert main(["--config", cfg, "staff", "remove", "w01"]) == 1
    with Store(_db(tmp_path)) as s:
        assert [a.staff_id for a in s.list_staff()] == ["m01"]
        lines = [(a.staff_id.startswith("os:"), a.action, a.target) for a in s.audit_log()]
    assert lines == [
        (True, "staff_add", "staff:w01"),
        (True, "staff_add", "staff:m01"),
        (True, "staff_remove", "staff:w01"),
    ]


def test_status_changes_and_removals_are_audited(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from datetime import date

    from edge.meals.rules import Senior

    cfg = write_config(tmp_path)
    with Store(_db(tmp_path)) as s:
        s.add_senior(Senior("S0001", "Secret Name", date(1940, 1, 1), "xuhui"))
    assert main(["--config", cfg, "set-status", "S0001", "suspended"]) == 0
    assert main(["--config", cfg, "remove", "S0001", "--yes"]) == 0
    assert main(["--config", cfg, "set-status", "S0404", "active"]) == 1  # nothing done: nothing audited
    with Store(_db(tmp_path)) as s:
        lines = [(a.action, a.target, a.details) for a in s.audit_log()]
    assert lines == [("status", "senior:S0001", {"status": "suspended"}), ("remove", "senior:S0001", {})]
    assert b"Secret Name" not in _db(tmp_path).read_bytes()  # the audit log keeps no name
