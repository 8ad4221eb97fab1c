"""Config: strict validation, every error names its line; the default config is complete and valid."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel

from edge.cli.main import main
from edge.config import DEFAULT_CONFIG, ConfigError, load_config, parse_config


def test_default_config_is_valid_and_complete() -> None:
    cfg = parse_config(DEFAULT_CONFIG)
    assert cfg.centre.timezone == "Asia/Shanghai"
    assert [(m.name, m.start, m.end, m.price_fen) for m in cfg.rules.meals] == [
        ("lunch", "10:30", "13:30", 1000),
        ("dinner", "16:30", "18:30", 1000),
    ]
    assert (cfg.rules.min_age, cfg.rules.subsidy_fen, cfg.rules.subsidised_meals_per_day) == (70, 300, 1)
    # Every field of every section is spelled out in the default file, so operators see all keys.
    sections = [(name, section) for name, section in cfg if name not in ("source_path", "rules")]
    sections.append(("mqtt.tls", cfg.mqtt.tls))
    for name, section in sections:
        assert f"\n[{name}]\n" in DEFAULT_CONFIG, f"[{name}] missing from the default config"
        for key, value in section:
            if isinstance(value, BaseModel):
                continue  # a sub-table, checked as its own section
            assert f"\n{key} = " in DEFAULT_CONFIG, f"[{name}] {key} missing from the default config"


def _line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


@pytest.mark.parametrize(
    "old, new, key, fragment",
    [
        ("upsample = 0", "upsampel = 0", "detect.upsampel", "unknown key"),
        ("port = 1883", "port = 70000", "mqtt.port", "less than or equal"),
        ('timezone = "Asia/Shanghai"', 'timezone = "Mars/Olympus"', "centre.timezone", "unknown time zone"),
        ('start = "16:30"', 'start = "4pm"', "rules.meals.1.start", "HH:MM"),
        ("subsidy_fen = 300", "subsidy_fen = -5", "rules.subsidy_fen", "greater than or equal"),
        ('kiosk_id = "kiosk-1"', 'kiosk_id = "a/b"', "centre.kiosk_id", "must not contain"),
        ("min_frames = 3", "min_frames = 9", "track", "max_frames must be at least min_frames"),
    ],
)
def test_bad_value_names_the_line(old: str, new: str, key: str, fragment: str) -> None:
    assert old in DEFAULT_CONFIG
    text = DEFAULT_CONFIG.replace(old, new, 1)
    with pytest.raises(ConfigError) as e:
        parse_config(text, "kiosk.toml")
    msg = str(e.value)
    assert f"line {_line_of(text, new)}" in msg or key == "track"
    assert key in msg and fragment in msg and "kiosk.toml" in msg


def test_overlapping_meals_are_refused() -> None:
    text = DEFAULT_CONFIG.replace('start = "16:30"', 'start = "13:00"')
    with pytest.raises(ConfigError, match="overlap"):
        parse_config(text)


def test_missing_centre_and_syntax_error() -> None:
    with pytest.raises(ConfigError, match="centre: required key is missing"):
        parse_config("[camera]\nsource = '0'\n")
    with pytest.raises(ConfigError, match="line 2"):
        parse_config("[centre]\nid = \n")


def test_check_config_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.toml"
    good.write_text(DEFAULT_CONFIG)
    # SFace, the default, not mirrored ("auto": its thresholds were measured without), has its own thresholds
    assert main(["check-config", str(good)]) == 0
    assert "model face_recognition_sface_2021dec:fb143eea07838aa5, thresholds" in capsys.readouterr().out
    # and so has dlib's model, still selectable
    dlib = tmp_path / "dlib.toml"
    dlib.write_text(
        DEFAULT_CONFIG.replace('model = "sface"', 'model = "dlib"').replace('detector = "yunet"', 'detector = "hog"')
    )
    assert main(["check-config", str(dlib)]) == 0
    assert "model dlib_face_recognition_resnet_model_v1:55533b28a95800a5+flip, thresholds" in capsys.readouterr().out
    # the template refresh's thresholds are on dlib's scale: said under SFace, not under dlib
    refresh = tmp_path / "refresh.toml"
    refresh.write_text(DEFAULT_CONFIG.replace("refresh_templates = false", "refresh_templates = true"))
    assert main(["check-config", str(refresh)]) == 0
    assert "refresh_templates is on, but refresh_distance" in capsys.readouterr().err
    dlib.write_text(dlib.read_text().replace("refresh_templates = false", "refresh_templates = true"))
    assert main(["check-config", str(dlib)]) == 0
    assert "refresh_templates" not in capsys.readouterr().err
    bad = tmp_path / "bad.toml"
    bad.write_text(DEFAULT_CONFIG.replace("keepalive = 30", "keepalive = 30\nqos = 2"))
    assert main(["check-config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"line {_line_of(bad.read_text(), 'qos = 2')}: mqtt.qos: unknown key" in err
    assert main(["check-config", str(tmp_path / "nope.toml")]) == 2
    assert "config file not found" in capsys.readouterr().err


def test_check_config_checks_the_thresholds_and_the_stores_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """What `run` would trip over at start: no thresholds for the configured model, or seniors the store
    holds only for the other mirror setting (the kiosk would turn them away)."""
    from datetime import date

    import numpy as np

    from edge.meals.rules import Senior
    from edge.modelbuild.modelfiles import model_id_for
    from edge.store import Store, TemplateIn

    cfg = tmp_path / "c.toml"
    # dlib's model (SFace is the default): its store, mirror setting and thresholds
    text = DEFAULT_CONFIG.replace('[store]\npath = ""', '[store]\npath = "state/s.sqlite"').replace(
        'model = "sface"', 'model = "dlib"'
    )
    cfg.write_text(text)
    assert main(["check-config", str(cfg)]) == 0
    assert "+flip, thresholds" in capsys.readouterr().out  # mirrored by default, the committed thresholds

    # a store enrolled with plain descriptors, as before mirroring was the default
    with Store(tmp_path / "state" / "s.sqlite") as store:
        store.add_senior(Senior("S1", "Wang Fang", date(1950, 1, 1), "xuhui", "active"))
        store.add_templates("S1", [TemplateIn(np.ones(128, np.float32), model_id_for(), 1.0, "a.jpg")])
    assert main(["check-config", str(cfg)]) == 1
    assert "1 seniors" in capsys.readouterr().err
    plain = tmp_path / "plain.toml"
    plain.write_text(cfg.read_text().replace('mirror = "auto"', "mirror = false"))
    assert main(["check-config", str(plain)]) == 0

    # thresholds made for another model are refused, naming the file
    (tmp_path / "other.toml").write_text(
        (Path(__file__).resolve().parents[1] / "models" / "calibration-nomirror.toml").read_text()
    )
    cfg.write_text(cfg.read_text().replace('calibration = ""', 'calibration = "other.toml"'))
    assert main(["check-config", str(cfg)]) == 1
    assert "other.toml: thresholds were calibrated for model" in capsys.readouterr().err

    # the same dlib store under SFace: those seniors cannot be recognised, and it says so
    sface = tmp_path / "sface.toml"
    sface.write_text(text.replace('model = "dlib"', 'model = "sface"'))
    assert main(["check-config", str(sface)]) == 1
    err = capsys.readouterr().err
    assert "1 seniors have face templates only for model dlib_face_recognition_resnet_model_v1" in err
    assert "face_recognition_sface_2021dec" in err


def test_default_config_cli_round_trips(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["default-config"]) == 0
    out = capsys.readouterr().out
    p = tmp_path / "c.toml"
    p.write_text(out)
    cfg = load_config(p)
    # relative paths resolve next to the config file
    cfg2 = parse_config(out.replace('[store]\npath = ""', '[store]\npath = "state/db.sqlite"'), p)
    assert cfg2.store_path == tmp_path / "state" / "db.sqlite"
    assert cfg.store_path == cfg.state_dir / "meal-edge.sqlite"


def test_the_state_folder_defaults_to_systemd_then_xdg_then_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = tmp_path / "c.toml"
    p.write_text(DEFAULT_CONFIG)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_STATE_HOME", raising=False)
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    user = tmp_path / "home" / ".local" / "state" / "meal-edge"
    cfg = load_config(p)
    assert (cfg.state_dir, cfg.store_path, cfg.model_dir) == (user, user / "meal-edge.sqlite", user / "models")
    assert cfg.evidence_dir == user / "evidence"
    monkeypatch.setenv("XDG_STATE_HOME", "relative/is/ignored")
    assert load_config(p).state_dir == user
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    assert load_config(p).state_dir == tmp_path / "xdg" / "meal-edge"
    # the service: systemd's StateDirectory=meal-edge sets $STATE_DIRECTORY
    monkeypatch.setenv("STATE_DIRECTORY", "/var/lib/meal-edge")
    cfg = load_config(p)
    assert cfg.store_path == Path("/var/lib/meal-edge/meal-edge.sqlite")
    assert cfg.model_dir == Path("/var/lib/meal-edge/models")
    # the config names it: relative to the config file's folder
    p.write_text(DEFAULT_CONFIG.replace('state_dir = ""', 'state_dir = "st"'))
    cfg = load_config(p)
    assert (cfg.store_path, cfg.model_dir) == (tmp_path / "st" / "meal-edge.sqlite", tmp_path / "st" / "models")


def test_idle_throttle() -> None:
    from edge.cli.main import should_look

    assert should_look(False, 10.0, 9.99, 5.0)  # someone in view: every frame
    assert not should_look(True, 10.0, 9.9, 5.0)  # empty room: not before 0.2 s
    assert should_look(True, 10.0, 9.75, 5.0)
    assert should_look(True, 10.0, 9.99, 0.0)  # throttle off


def test_mirror_auto_follows_the_model() -> None:
    """`mirror = "auto"` (the default): on for dlib, off for SFace, whose accuracy was measured without; an
    explicit true/false wins."""
    from edge.config import RecognitionConfig

    assert RecognitionConfig().mirror is False
    assert RecognitionConfig.model_validate({"model": "dlib"}).mirror is True
    assert RecognitionConfig.model_validate({"model": "sface", "mirror": True}).mirror is True
    assert RecognitionConfig.model_validate({"model": "dlib", "mirror": False}).mirror is False
    assert parse_config(DEFAULT_CONFIG.replace('model = "sface"', 'model = "dlib"')).recognition.mirror is True
    with pytest.raises(ConfigError, match="recognition.mirror"):
        parse_config(DEFAULT_CONFIG.replace('mirror = "auto"', 'mirror = "yes"'))
