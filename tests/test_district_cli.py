"""meal-district's config and commands as an operator uses them, and the embedded district of the demo."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from conftest import MosquittoBroker
from district_support import ROOT, RawPublisher, payload, topic, wait_until

from district.config import DEFAULT_CONFIG, Config, ConfigError, parse_config, read_secret
from district.embedded import EmbeddedDistrict, settle_events


class Result:
    def __init__(self, returncode: int, stdout: str, stderr: str) -> None:
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


def run(*args: str, stdin: str | None = None) -> Result:
    """meal-district's main() in this process (a process per call is slow on a loaded machine); one test below
    runs the installed command itself."""
    import contextlib
    import io

    from district.cli import main

    out, err = io.StringIO(), io.StringIO()
    old = sys.stdin
    sys.stdin = io.StringIO(stdin or "")
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(list(args))
    finally:
        sys.stdin = old
    return Result(code, out.getvalue(), err.getvalue())


def test_the_command_runs_as_a_process() -> None:
    r = subprocess.run([sys.executable, "-m", "district", "default-config"], capture_output=True, text=True,
                       cwd=ROOT, timeout=120)
    assert r.returncode == 0 and r.stdout == DEFAULT_CONFIG


def test_default_config_is_complete_and_valid() -> None:
    r = run("default-config")
    assert r.returncode == 0 and r.stdout == DEFAULT_CONFIG
    data = tomllib.loads(r.stdout)
    cfg = parse_config(r.stdout)
    assert cfg == Config()  # every default shown is the real default

    def keys(model: type, prefix: str = "") -> set[str]:
        out = set()
        for name, f in model.model_fields.items():  # type: ignore[attr-defined]
            if name == "source_path":
                continue
            sub = f.annotation
            if isinstance(sub, type) and hasattr(sub, "model_fields"):
                out |= keys(sub, f"{prefix}{name}.")
            else:
                out.add(f"{prefix}{name}")
        return out

    def flat(d: dict, prefix: str = "") -> set[str]:  # type: ignore[type-arg]
        return {k for key, v in d.items() for k in (flat(v, f"{prefix}{key}.") if isinstance(v, dict)
                                                       else {f"{prefix}{key}"})}

    assert flat(data) == keys(Config)
    assert all("#" in line for line in r.stdout.splitlines() if "=" in line), "every key is commented"


@pytest.mark.parametrize(("change", "line", "message"), [
    ('port = 1883', "port = 99999", "broker.port: Input should be less than or equal to 65535"),
    ('group = "meal-district"', 'group = "a/b"', "ingest.group: Value error, 'a/b' must be non-empty"),
    ('enabled = false', "enabeld = true", "broker.tls.enabeld: unknown key"),
    ('listen = "127.0.0.1:8090"', 'listen = "8090"', "web.listen: Value error, '8090' is not HOST:PORT"),
])
def test_check_config_names_the_bad_line(tmp_path: Path, change: str, line: str, message: str) -> None:
    text = DEFAULT_CONFIG.replace(change, line, 1)
    path = tmp_path / "district.toml"
    path.write_text(text)
    want = next(i for i, ln in enumerate(text.splitlines(), 1) if ln.startswith(line))
    r = run("check-config", str(path))
    assert r.returncode == 2
    assert f"line {want}: {message}" in r.stderr, r.stderr
    good = tmp_path / "good.toml"
    good.write_text(DEFAULT_CONFIG)
    assert run("check-config", str(good)).returncode == 0


def test_syntax_error_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[district]\nid = \n")
    assert "TOML syntax error" in run("check-config", str(bad)).stderr
    with pytest.raises(ConfigError, match="config file not found"):
        from district.config import load_config

        load_config(tmp_path / "nope.toml")


def test_secrets_come_from_files_and_systemd_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "broker-password").write_text("s3cret\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    cfg = parse_config('[database]\nurl = "postgresql+psycopg://meal@db/meal"\npassword_file = "broker-password"\n',
                       tmp_path / "x.toml")
    assert read_secret("broker-password", cfg) == "s3cret"
    assert cfg.database_url == "postgresql+psycopg://meal:s3cret@db/meal"
    with pytest.raises(ConfigError, match="cannot read secret file"):
        read_secret("missing", cfg)


def test_user_add_reads_the_password_from_stdin_never_argv(tmp_path: Path) -> None:
    cfg = tmp_path / "d.toml"
    cfg.write_text(f'[database]\nurl = "sqlite:///{tmp_path / "d.sqlite"}"\n')
    r = run("--config", str(cfg), "user", "add", "wang.li", stdin="correct horse battery\n")
    assert r.returncode == 0, r.stderr
    r = run("--config", str(cfg), "user", "add", "zhao", stdin="short\n")
    assert r.returncode == 2 and "at least 10 characters" in r.stderr
    from district.db.engine import open_engine
    from district.users import check_login

    eng = open_engine(f"sqlite:///{tmp_path / 'd.sqlite'}")
    assert check_login(eng, "wang.li", "correct horse battery") is None
    assert check_login(eng, "wang.li", "wrong password!") == "Wrong name or password."
    assert check_login(eng, "nobody", "correct horse battery") == "Wrong name or password."
    for _ in range(5):
        check_login(eng, "wang.li", "wrong password!")
    assert "locked" in (check_login(eng, "wang.li", "correct horse battery") or "")
    eng.dispose()


def test_status_report_and_quarantine_commands(tmp_path: Path) -> None:
    db = tmp_path / "d.sqlite"
    line = settle_events([payload(1), payload(3, "S0002"), b"garbage"], db_path=db)
    cfg = tmp_path / "d.toml"
    cfg.write_text(f'[database]\nurl = "sqlite:///{db}"\n')
    st = json.loads(run("--config", str(cfg), "status", "--json").stdout)
    assert st["counts"]["events"] == 2 and st["counts"]["quarantined"] == 1
    assert [(g["first_seq"], g["last_seq"]) for g in st["gaps"]] == [(2, 2)]
    text = run("--config", str(cfg), "status").stdout
    assert "xuhui/centre-001/kiosk-1" in text and "seq 2-2 (1 events)" in text
    q = json.loads(run("--config", str(cfg), "quarantine", "--json").stdout)
    assert q[0]["reason"].startswith("not JSON") and q[0]["preview"] == "garbage"
    r = run("--config", str(cfg), "report", "--month", "2026-11", "--out", str(tmp_path / "out"))
    assert r.returncode == 0 and "net 600 fen" in r.stdout, r.stdout + r.stderr
    assert "2 meals" in line


def test_settle_events_for_the_demo() -> None:
    a, b = payload(1, "S0001"), payload(2, "S0002", subsidy=0)
    c = payload(1, "S0001", centre="centre-002", minute=50)  # the same senior subsidised at another centre
    line = settle_events([a, b, a, c])
    assert line == ("district xuhui, 2026-11-30: 3 meals from 2 kiosks (1 duplicate copies ignored, 0 conflicting, "
                    "0 quarantined), 2 subsidised, subsidy 600 fen, 1 flagged (300 fen), net payable CNY 3.00")


def test_embedded_district_through_a_broker(mosquitto_broker: MosquittoBroker, tmp_path: Path) -> None:
    with EmbeddedDistrict(tmp_path / "d.sqlite", (mosquitto_broker.host, mosquitto_broker.port), "xuhui") as d:
        pub = RawPublisher(mosquitto_broker)
        pub.send([(topic(), payload(1)), (topic(), payload(2, "S0002"))])
        pub.close()
        assert d.wait_for(2)
        wait_until(lambda: "2 meals" in d.summary_line(), 5, "the settlement line")
        assert d.summary_line().endswith("2 subsidised, subsidy 600 fen, 0 flagged (0 fen), net payable CNY 6.00")


def test_the_packaged_schemas_are_the_documented_ones() -> None:
    from district.paths import schema

    for name in ("events.schema.json", "status.schema.json"):
        assert schema(name) == json.loads((ROOT / "docs" / name).read_text()), name
    # each version is checked on its own: the v2 definition of the documented schema adds the signed fields
    v1, v2 = schema("events.schema.json#v1"), schema("events.schema.json#v2")
    assert v1["properties"]["schema"]["const"] == "meal-edge/meal-event/1"
    assert {"sig", "prev_hash", "check_in"} <= set(v2["required"]) and "sig" not in v1.get("required", [])
