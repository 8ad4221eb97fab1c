"""Issue 15, defect 4: strict config types (money never a float, a string never a bool or a port) and an
integer camera index; every refusal names its line. Real files through the real loader and command."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.cli.main import main
from edge.config import DEFAULT_CONFIG, ConfigError, load_config


def _line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), start=1) if needle in line)


@pytest.mark.parametrize(
    ("good", "bad", "key", "hint"),
    [
        ("port = 1883", 'port = "57005"', "mqtt.port", "Input should be a valid integer, got '57005'"),
        ("[mqtt]\nenabled = true", '[mqtt]\nenabled = "yes"', "mqtt.enabled", "write true or false"),
        ("subsidy_fen = 300", "subsidy_fen = 3.0", "rules.subsidy_fen", "money is in fen"),
        ("price_fen = 1000", "price_fen = 10.5", "rules.meals.0.price_fen", "valid integer"),
        ("min_age = 70", 'min_age = "70"', "rules.min_age", "valid integer"),
        ("speak = true", "speak = 1", "display.speak", "write true or false"),
        ("keep_photos = false", 'keep_photos = "false"', "store.keep_photos", "write true or false"),
    ],
)
def test_lax_types_are_refused_naming_the_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], good: str, bad: str, key: str, hint: str
) -> None:
    text = DEFAULT_CONFIG.replace(good, bad, 1)
    assert text != DEFAULT_CONFIG
    p = tmp_path / "meal-edge.toml"
    p.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    line = _line_of(text, bad.splitlines()[-1])
    assert f"line {line}: {key}: " in str(e.value) and hint in str(e.value), str(e.value)
    assert main(["check-config", str(p)]) == 2
    err = capsys.readouterr().err
    assert f"line {line}: {key}" in err and "Traceback" not in err


@pytest.mark.parametrize(("value", "want"), [("0", "0"), ("2", "2"), ('"0"', "0"), ('"rtsp://cam/1"', "rtsp://cam/1")])
def test_camera_source_takes_an_integer_device_index(tmp_path: Path, value: str, want: str) -> None:
    p = tmp_path / "meal-edge.toml"
    p.write_text(DEFAULT_CONFIG.replace('source = "0"', f"source = {value}", 1), encoding="utf-8")
    assert load_config(p).camera.source == want


def test_a_negative_or_boolean_camera_index_is_refused(tmp_path: Path) -> None:
    for value in ("-1", "true", "1.5"):
        text = DEFAULT_CONFIG.replace('source = "0"', f"source = {value}", 1)
        p = tmp_path / "meal-edge.toml"
        p.write_text(text, encoding="utf-8")
        with pytest.raises(ConfigError, match=rf"line {_line_of(text, 'source = ')}: camera.source"):
            load_config(p)


def test_floats_still_take_integers(tmp_path: Path) -> None:
    # `show_seconds = 8` and `refresh_every_days = 30` in the default config are integers for float keys
    p = tmp_path / "meal-edge.toml"
    p.write_text(DEFAULT_CONFIG.replace("reconnect_seconds = 5.0", "reconnect_seconds = 5"), encoding="utf-8")
    cfg = load_config(p)
    assert cfg.camera.reconnect_seconds == 5.0 and cfg.display.show_seconds == 8.0
