"""The one TOML config file, validated strictly: unknown keys are errors, and every error names its line.

`meal-edge` and `meal-enroll` read the same file. Each part of the daemon receives only its own section.
"""

from __future__ import annotations

import argparse
import re
from datetime import time
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from edge import tomlconfig
from edge.paths import built_models_dir, default_config_text, default_state_dir


class ConfigError(ValueError):
    """A config problem, already phrased for the operator (file, line, key, what is wrong)."""


def parse_listen(text: str, example: str = "127.0.0.1:8080") -> tuple[str, int]:
    """HOST:PORT, [IPv6]:PORT."""
    host, sep, port = text.strip().rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT (e.g. {example})")
    return host, int(port)


class _Section(BaseModel):
    # strict: a quoted "57005" is not a port, "yes" is not a bool, 3.0 is not an amount of fen (an integer
    # is still accepted where a float is expected: `show_seconds = 8`)
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class CentreConfig(_Section):
    id: str = Field(min_length=1, description="centre id as the district knows it")
    district: str = Field(min_length=1, description="hukou district whose residents get the subsidy")
    kiosk_id: str = Field(min_length=1, description="this kiosk; sequence numbers are per kiosk")
    timezone: str = "Asia/Shanghai"
    name: str = ""
    #: what the kiosk speaks: "zh" (default) or "en"
    language: Literal["zh", "en"] = "zh"

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError) as e:
            raise ValueError(f"unknown time zone {v!r} (use an IANA name such as Asia/Shanghai)") from e
        return v

    @field_validator("id", "district", "kiosk_id")
    @classmethod
    def _topic_safe(cls, v: str) -> str:
        # These become MQTT topic levels.
        if any(c in v for c in "/+#") or v.strip() != v:
            raise ValueError(f"{v!r} must not contain '/', '+', '#' or surrounding spaces")
        return v

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


class CameraConfig(_Section):
    #: a device index (0 or "0"), an RTSP/HTTP URL, a video file or a folder of images
    source: str = "0"
    width: int = Field(0, ge=0, description="requested capture width; 0 keeps the camera's default")
    height: int = Field(0, ge=0)
    reconnect_seconds: float = Field(5.0, gt=0)
    queue_size: int = Field(4, ge=1)
    idle_fps: float = Field(5.0, ge=0, description="frames a second looked at while nobody is in view; 0: all")

    @field_validator("source", mode="before")
    @classmethod
    def _device_index(cls, v: object) -> object:
        if isinstance(v, int) and not isinstance(v, bool):
            if v < 0:
                raise ValueError(f"device index {v} must be 0 or more")
            return str(v)
        return v


class DetectConfig(_Section):
    #: yunet: OpenCV Zoo's YuNet (boxes + the 5 points SFace aligns on, ~8 ms at 640x360 on 2 threads);
    #: hog: dlib's HOG + shape_predictor_5 (docs/models.md compares them)
    detector: Literal["yunet", "hog"] = "yunet"
    detect_width: int = Field(640, ge=160, description="frames are downscaled to this width for detection")
    upsample: int = Field(0, ge=0, le=2)
    min_face_px: int = Field(60, ge=20, description="faces narrower than this (full-frame pixels) are ignored")
    #: who is served (edge/recognition/serve.py, docs/display.md): "nearest": one person at a time, the one
    #: being served keeps the turn, else the largest face; "all": everyone side by side at the front
    serve: Literal["nearest", "all"] = "nearest"
    #: faces narrower than this fraction of the largest usable face stand behind (queue, room): never served
    min_face_ratio: float = Field(0.8, gt=0, le=1)


def mirror_by_default(model: str) -> bool:
    """`mirror = "auto"`: on for dlib (measured: fewer seniors turned away), off for SFace (its thresholds and
    figures were measured on plain descriptors)."""
    return model == "dlib"


class RecognitionConfig(_Section):
    #: the face model: sface (OpenCV Zoo SFace, ArcFace-aligned 112x112 chips) or dlib (dlib's ResNet);
    #: each has its own model_id, so its own templates and calibration (docs/models.md)
    model: Literal["sface", "dlib"] = "sface"
    #: dlib only: auto (ONNX if the model verifies, else dlib's own code), onnx, dlib
    backend: Literal["auto", "onnx", "dlib"] = "auto"
    threads: int = Field(0, ge=0, description="0: as many as the machine has cores")
    #: calibration file with the decision thresholds; empty: the one stored with the model in models/
    calibration: str = ""
    #: average each face's descriptor with its mirror image's (edge/recognition/embed/mirror.py): a different
    #: model_id, so templates enrolled with the other setting are not used (the daemon says so at start).
    #: "auto" (the default): on for dlib (fewer turned-away seniors at the same error limits, measured), off for
    #: SFace (its thresholds and accuracy figures were measured without; mirrored SFace is not yet measured on
    #: kiosk-like presences, docs/accuracy.md). Always a bool once read.
    mirror: bool = False
    #: template refresh from confident automatic check-ins (edge/recognition/refresh.py, docs/accuracy.md);
    #: off by default. Its distances are on dlib's scale: not yet calibrated for SFace (issue 10)
    refresh_templates: bool = False
    refresh_max: int = Field(2, ge=1, le=10, description="check-in templates kept per senior; the oldest is replaced")
    refresh_distance: float = Field(0.20, ge=0, le=2, description="fused distance at most this to refresh")
    refresh_min_margin: float = Field(0.20, ge=0, le=2, description="margin to the second senior at least this")
    refresh_every_days: float = Field(30.0, gt=0, description="at most one refresh per senior per this many days")

    @model_validator(mode="before")
    @classmethod
    def _mirror_for_model(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("mirror", "auto") == "auto":
            data = {**data, "mirror": mirror_by_default(data.get("model", "sface"))}
        return data


class TrackConfig(_Section):
    iou_match: float = Field(0.3, gt=0, lt=1)
    max_missing_frames: int = Field(8, ge=1, description="a presence ends after this many frames without it")
    min_frames: int = Field(3, ge=1, description="frames that must agree before a decision")
    max_frames: int = Field(5, ge=1, description="frames fused at most for one decision")
    reembed_every: int = Field(3, ge=1, description="embed a tracked face every N frames until decided")

    @model_validator(mode="after")
    def _order(self) -> TrackConfig:
        if self.max_frames < self.min_frames:
            raise ValueError("max_frames must be at least min_frames")
        return self


class LivenessConfig(_Section):
    """Passive check against a photo or a phone screen held up to the camera (docs/liveness.md)."""

    enabled: bool = True
    min_frames: int = Field(8, ge=4, description="frames of a presence needed for a verdict")
    max_frames: int = Field(24, ge=4, description="frames kept per presence; wait at most this long for motion")
    pair_gap: int = Field(2, ge=1, description="compare frame i with i+pair_gap: 2 at 25-30 fps, 1 at 10-15 fps")
    threshold: float = -0.13

    @model_validator(mode="after")
    def _order(self) -> LivenessConfig:
        if self.max_frames < self.min_frames:
            raise ValueError("max_frames must be at least min_frames")
        return self


class PathsConfig(_Section):
    #: what meal-edge makes (store, audit snapshots, converted model); empty: edge.paths.default_state_dir()
    state_dir: str = ""


class StoreConfig(_Section):
    #: empty: meal-edge.sqlite in the state folder
    path: str = ""
    keep_photos: bool = False
    #: the AES key sealing face templates (edge.security.atrest); empty: "template.key" beside the store. A
    #: systemd credential "meal-edge-template-key" ($CREDENTIALS_DIRECTORY) is used instead when present.
    key_file: str = ""


class EvidenceConfig(_Section):
    """Audit snapshots of each meal and pending confirmation, kept on the kiosk only (edge/store/evidence.py)."""

    enabled: bool = True
    #: empty: a folder "evidence" beside the store
    dir: str = ""
    retention_days: int = Field(30, ge=1, le=3650, description="snapshots older than this many days are deleted")


def _credential_name(v: str) -> str:
    if v and (v in (".", "..") or "/" in v):
        raise ValueError(f"{v!r} is a systemd credential name (as in LoadCredential=NAME:/path), not a path")
    return v


class MqttTlsConfig(_Section):
    """TLS to the broker, and the kiosk's client certificate (docs/deployment.md)."""

    enabled: bool = False
    #: the CA that signed the broker's certificate; empty: the system's CAs
    ca_file: str = ""
    #: this kiosk's certificate (its CN is the kiosk's identity); empty: log in with username instead
    cert_file: str = ""
    #: its private key: a file (0600) or a systemd credential name (LoadCredential=), never both
    key_file: str = ""
    key_credential: str = ""

    @field_validator("key_credential")
    @classmethod
    def _cred(cls, v: str) -> str:
        return _credential_name(v)

    @model_validator(mode="after")
    def _pairs(self) -> MqttTlsConfig:
        if self.key_file and self.key_credential:
            raise ValueError("give the client key as key_file or key_credential, not both")
        has_key = bool(self.key_file or self.key_credential)
        if bool(self.cert_file) != has_key:
            raise ValueError("cert_file and its key (key_file or key_credential) go together")
        if (self.cert_file or self.ca_file) and not self.enabled:
            raise ValueError("certificate files are set but enabled = false: set enabled = true")
        return self


class MqttConfig(_Section):
    host: str = "127.0.0.1"
    port: int = Field(1883, ge=1, le=65535)
    topic_prefix: str = "meal/v1"
    client_id: str = ""
    keepalive: int = Field(30, ge=5)
    enabled: bool = True
    #: MQTT 5 session expiry: how long the broker keeps this kiosk's session (and queue) while it is away
    session_expiry: int = Field(7 * 24 * 3600, ge=0, le=0xFFFFFFFE)
    #: a login instead of a client certificate; the password only from a file or a systemd credential
    username: str = ""
    password_file: str = ""
    password_credential: str = ""
    tls: MqttTlsConfig = MqttTlsConfig()

    @field_validator("password_credential")
    @classmethod
    def _cred(cls, v: str) -> str:
        return _credential_name(v)

    @model_validator(mode="after")
    def _login(self) -> MqttConfig:
        has_password = bool(self.password_file or self.password_credential)
        if self.password_file and self.password_credential:
            raise ValueError("give the password as password_file or password_credential, not both")
        if bool(self.username) != has_password:
            raise ValueError("username and its password (password_file or password_credential) go together")
        return self

    @property
    def authenticated(self) -> bool:
        """TLS with a kiosk identity (certificate or login): what a centre must run (docs/deployment.md)."""
        return self.tls.enabled and bool(self.tls.cert_file or self.username)

    @field_validator("topic_prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        if not v or v.startswith("/") or v.endswith("/") or any(c in v for c in "+#"):
            raise ValueError("topic_prefix must be like 'meal/v1' (no leading/trailing '/', no wildcards)")
        return v


class RosterConfig(_Section):
    """The district roster link (issue 13, docs/roster.md): the district owns the roster; this kiosk keeps in
    step with it over the [mqtt] connection and sends up the templates enrolled here."""

    enabled: bool = False
    #: the district's roster public key (`meal-district keys roster-init` prints it): public, so inline is fine
    district_key: str = ""
    #: ... or a file holding it
    district_key_file: str = ""
    #: the 32-byte roster transport key shared with the district: a file (0600); empty: the systemd credential
    #: "meal-roster-key" ($CREDENTIALS_DIRECTORY)
    transport_key_file: str = ""
    poll_seconds: float = Field(1.0, gt=0, le=60, description="how often uploads and resync requests are looked for")

    @model_validator(mode="after")
    def _one_key(self) -> RosterConfig:
        if self.district_key and self.district_key_file:
            raise ValueError("give the district key as district_key or district_key_file, not both")
        return self


class ClockConfig(_Section):
    """Clock guard (edge/security/clockguard.py): no meal is decided on a clock earlier than the newest meal
    event in the store, nor, at start, on one more than max_start_skew_days beyond it."""

    max_start_skew_days: float = Field(30.0, ge=0, description="0: no check at start")


_HHMM = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")


class MealWindow(_Section):
    name: str = Field(min_length=1)
    start: str
    end: str
    price_fen: int = Field(ge=0)

    @field_validator("start", "end")
    @classmethod
    def _hhmm(cls, v: str) -> str:
        if not _HHMM.match(v):
            raise ValueError(f"{v!r} is not a local time HH:MM (e.g. 10:30)")
        return v

    @model_validator(mode="after")
    def _ordered(self) -> MealWindow:
        if self.start_time >= self.end_time:
            raise ValueError(f"meal {self.name!r}: start {self.start} must be before end {self.end}")
        return self

    @property
    def start_time(self) -> time:
        return time.fromisoformat(self.start)

    @property
    def end_time(self) -> time:
        return time.fromisoformat(self.end)


def _default_meals() -> list[MealWindow]:
    return [
        MealWindow(name="lunch", start="10:30", end="13:30", price_fen=1000),
        MealWindow(name="dinner", start="16:30", end="18:30", price_fen=1000),
    ]


class RulesConfig(_Section):
    min_age: int = Field(70, ge=0, le=130)
    subsidy_fen: int = Field(300, ge=0)
    subsidised_meals_per_day: int = Field(1, ge=0)
    meals: list[MealWindow] = Field(default_factory=_default_meals)

    @model_validator(mode="after")
    def _no_overlap(self) -> RulesConfig:
        names = [m.name for m in self.meals]
        if len(set(names)) != len(names):
            raise ValueError("meal names must be unique")
        spans = sorted((m.start_time, m.end_time, m.name) for m in self.meals)
        for (_, e1, n1), (s2, _, n2) in zip(spans, spans[1:], strict=False):
            if s2 < e1:
                raise ValueError(f"meal windows {n1!r} and {n2!r} overlap")
        return self


class DisplayConfig(_Section):
    """The senior-facing kiosk screen that `meal-edge run` serves (edge/screens/display.py, docs/display.md)."""

    enabled: bool = True
    #: HOST:PORT of the page (and of /api/latest); loopback: only the kiosk's own browser can open it
    listen: str = "127.0.0.1:8081"
    show_seconds: float = Field(8.0, ge=1, le=600, description="a result stays on screen this long, then the prompt")
    #: the page says each result aloud with the browser's speech synthesis (zh-CN or en-US)
    speak: bool = True
    #: "please wait" stays up this long for staff to answer a confirmation, then the senior is sent to staff
    confirm_wait_seconds: float = Field(90.0, ge=5, le=900)

    @field_validator("listen")
    @classmethod
    def _listen(cls, v: str) -> str:
        try:
            parse_listen(v, "127.0.0.1:8081")
        except argparse.ArgumentTypeError as e:
            raise ValueError(str(e)) from None
        return v

    @property
    def address(self) -> tuple[str, int]:
        return parse_listen(self.listen)


class Config(_Section):
    centre: CentreConfig
    camera: CameraConfig = CameraConfig()
    detect: DetectConfig = DetectConfig()
    recognition: RecognitionConfig = RecognitionConfig()
    track: TrackConfig = TrackConfig()
    liveness: LivenessConfig = LivenessConfig()
    paths: PathsConfig = PathsConfig()
    store: StoreConfig = StoreConfig()
    evidence: EvidenceConfig = EvidenceConfig()
    mqtt: MqttConfig = MqttConfig()
    clock: ClockConfig = ClockConfig()
    roster: RosterConfig = RosterConfig()
    rules: RulesConfig = RulesConfig()
    display: DisplayConfig = DisplayConfig()

    #: the file the config came from (not a TOML key); relative paths resolve against its folder
    source_path: Path | None = Field(default=None, exclude=True)

    def resolve(self, p: str) -> Path:
        path = Path(p).expanduser()
        if not path.is_absolute() and self.source_path is not None:
            path = self.source_path.parent / path
        return path

    @property
    def state_dir(self) -> Path:
        """Where meal-edge keeps what it makes: `[paths] state_dir`, else the default (edge/paths.py)."""
        return self.resolve(self.paths.state_dir) if self.paths.state_dir else default_state_dir()

    @property
    def store_path(self) -> Path:
        return self.resolve(self.store.path) if self.store.path else self.state_dir / "meal-edge.sqlite"

    @property
    def model_dir(self) -> Path:
        """Where the converted model (.onnx) is built and read."""
        return built_models_dir(self.state_dir)

    @property
    def template_key_path(self) -> Path:
        return self.resolve(self.store.key_file) if self.store.key_file else self.store_path.parent / "template.key"

    @property
    def evidence_dir(self) -> Path:
        return self.resolve(self.evidence.dir) if self.evidence.dir else self.store_path.parent / "evidence"

    @property
    def mqtt_link(self) -> MqttConfig:
        """[mqtt] with its file paths resolved against the config's folder (credential names stay names)."""
        m, t = self.mqtt, self.mqtt.tls

        def res(p: str) -> str:
            return str(self.resolve(p)) if p else ""

        tls = t.model_copy(
            update={"ca_file": res(t.ca_file), "cert_file": res(t.cert_file), "key_file": res(t.key_file)}
        )
        return m.model_copy(update={"password_file": res(m.password_file), "tls": tls})

    @property
    def roster_district_key_path(self) -> Path | None:
        r = self.roster
        return self.resolve(r.district_key_file) if r.district_key_file else None

    @property
    def roster_transport_key_path(self) -> Path | None:
        r = self.roster
        return self.resolve(r.transport_key_file) if r.transport_key_file else None

    @property
    def calibration_path(self) -> Path | None:
        """`[recognition] calibration`, resolved; None: the file shipped with meal-edge for the model."""
        return self.resolve(self.recognition.calibration) if self.recognition.calibration else None


def parse_config(text: str, path: Path | str = "<config>") -> Config:
    """The config in `text`; ConfigError names the file, line and key of every problem (edge.tomlconfig)."""
    return tomlconfig.parse(text, path, Config, "meal-edge default-config", ConfigError)


def need_config(path: str | Path | None) -> Config:
    """The config a command cannot run without: a missing --config is an operator error that says the fix."""
    if not path:
        raise ConfigError("this command needs --config FILE (print a complete one with `meal-edge default-config`)")
    return load_config(path)


def load_config(path: str | Path) -> Config:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError as e:
        raise ConfigError(f"{p}: config file not found") from e
    except UnicodeDecodeError as e:
        raise ConfigError(f"{p}: not UTF-8 text ({e})") from e
    return parse_config(text, p)


#: `meal-edge default-config`: every key with its default and a comment (edge/default-config.toml)
DEFAULT_CONFIG = default_config_text()
