"""The district server's TOML config, validated strictly: unknown keys are errors and every error names its line.

Secrets (the broker password, the dashboard session key) are never in this file: they are read from files,
relative names being looked up in $CREDENTIALS_DIRECTORY first (systemd credentials), see `secret_path`.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from district.paths import default_database_url
from edge import tomlconfig


class ConfigError(ValueError):
    """A config problem, phrased for the operator: file, line, key and what is wrong."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _topic_level(v: str) -> str:
    if not v or any(c in v for c in "/+#") or v.strip() != v:
        raise ValueError(f"{v!r} must be non-empty, without '/', '+', '#' or surrounding spaces (an MQTT topic level)")
    return v


class DistrictSection(_Section):
    id: str = Field("xuhui", description="the district id the kiosks publish under")
    topic_prefix: str = "meal/v1"
    timezone: str = "Asia/Shanghai"
    name: str = ""

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        return _topic_level(v)

    @field_validator("topic_prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        if not v or any(c in v for c in "+#") or v.startswith("/") or v.endswith("/") or v.startswith("$"):
            raise ValueError(f"{v!r}: a topic prefix has no '+', '#', no leading '$' and no leading or trailing '/'")
        return v


class TlsSection(_Section):
    enabled: bool = False
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""


class BrokerSection(_Section):
    host: str = "127.0.0.1"
    port: int = Field(1883, ge=1, le=65535)
    keepalive: int = Field(30, ge=5, le=3600)
    username: str = ""
    #: a file holding the password; a relative name is looked up in $CREDENTIALS_DIRECTORY
    password_file: str = ""
    #: empty: meal-district-<district>-<host name>-<instance>
    client_id: str = ""
    session_expiry: int = Field(7 * 24 * 3600, ge=0, description="seconds the broker keeps our session while away")
    tls: TlsSection = TlsSection()


class DatabaseSection(_Section):
    #: empty: a SQLite file in the state folder
    url: str = ""
    #: a file holding the database password (PostgreSQL); inserted into the URL at connect time
    password_file: str = ""


class IngestSection(_Section):
    group: str = "meal-district"
    #: accept schema-1 (unsigned) events; only for the migration period to signed events
    accept_unsigned: bool = False
    max_payload_bytes: int = Field(16384, ge=1024, le=1_048_576)
    #: quarantined payloads keep at most this many bytes
    quarantine_keep_bytes: int = Field(4096, ge=256, le=1_048_576)
    batch_max: int = Field(500, ge=1, le=10_000)
    batch_wait_ms: int = Field(50, ge=1, le=5000)
    #: messages the broker may send before we acknowledge (MQTT 5 Receive Maximum)
    receive_maximum: int = Field(2000, ge=1, le=65535)
    #: seconds between gap, chain and double-subsidy checks
    watch_interval: float = Field(2.0, gt=0, le=3600)

    @field_validator("group")
    @classmethod
    def _group(cls, v: str) -> str:
        return _topic_level(v)


class WebSection(_Section):
    listen: str = "127.0.0.1:8090"
    #: a file with the cookie signing key; relative: in $CREDENTIALS_DIRECTORY; empty: <state>/session.key
    session_key_file: str = ""
    session_hours: float = Field(8.0, gt=0, le=24 * 7)
    #: only send the session cookie over HTTPS (set when a TLS proxy is in front)
    secure_cookies: bool = False

    @field_validator("listen")
    @classmethod
    def _listen(cls, v: str) -> str:
        parse_listen(v)
        return v


class MetricsSection(_Section):
    #: Prometheus /metrics of `serve`; empty: off
    listen: str = "127.0.0.1:9464"

    @field_validator("listen")
    @classmethod
    def _listen(cls, v: str) -> str:
        if v:
            parse_listen(v)
        return v


class ReportSection(_Section):
    #: subsidy per senior per local date, in fen, district-wide
    daily_subsidy_cap_fen: int = Field(300, ge=0)


class RosterSection(_Section):
    """The district roster link (issue 13, docs/roster.md)."""

    #: answer kiosks' roster sync requests and template uploads, push changes (needs the keys below)
    enabled: bool = False
    #: Ed25519 roster signing key (PEM); empty: systemd credential meal-district-roster-key, else
    #: roster-signing.key in the state folder (`meal-district keys roster-init` makes it)
    signing_key_file: str = ""
    #: the roster transport key shared with the kiosks; empty: credential meal-roster-key, else
    #: roster-transport.key in the state folder
    transport_key_file: str = ""
    #: the key sealing templates at rest in the database; empty: credential meal-district-template-key, else
    #: roster-template.key in the state folder
    template_key_file: str = ""
    #: changes per down/roster message (a catch-up or snapshot is sent in parts)
    batch_changes: int = Field(500, ge=1, le=10_000)
    #: seconds between looks for new changes to push
    push_interval: float = Field(0.2, gt=0, le=60)
    #: larger uplink messages are dropped (a template upload is a few KB)
    max_upload_bytes: int = Field(1_048_576, ge=16_384, le=64 * 1_048_576)


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    district: DistrictSection = DistrictSection()
    broker: BrokerSection = BrokerSection()
    database: DatabaseSection = DatabaseSection()
    ingest: IngestSection = IngestSection()
    web: WebSection = WebSection()
    metrics: MetricsSection = MetricsSection()
    report: ReportSection = ReportSection()
    roster: RosterSection = RosterSection()
    #: the file this came from; relative paths in it are resolved against its folder
    source_path: Path | None = Field(None, exclude=True)

    def resolve(self, p: str) -> Path:
        path = Path(p).expanduser()
        if not path.is_absolute() and self.source_path is not None:
            path = self.source_path.parent / path
        return path

    @property
    def database_url(self) -> str:
        url = self.database.url or default_database_url()
        if self.database.password_file and "@" in url:
            # user@host -> user:password@host; the password never appears in the file or argv
            from sqlalchemy.engine import make_url

            pw = read_secret(self.database.password_file, self)
            url = make_url(url).set(password=pw).render_as_string(hide_password=False)
        return url

    def client_id(self, instance: int = 1) -> str:
        return self.broker.client_id or f"meal-district-{self.district.id}-{socket.gethostname()}-{instance}"


def parse_listen(v: str) -> tuple[str, int]:
    host, sep, port = v.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{v!r} is not HOST:PORT (e.g. 127.0.0.1:8090)")
    return host.strip("[]"), int(port)


def secret_path(name: str, cfg: Config | None = None) -> Path:
    """A secret file: absolute as given; relative in $CREDENTIALS_DIRECTORY (systemd) when it is there,
    else beside the config file."""
    p = Path(name).expanduser()
    if p.is_absolute():
        return p
    creds = os.environ.get("CREDENTIALS_DIRECTORY")
    if creds and (Path(creds) / p).exists():
        return Path(creds) / p
    return cfg.resolve(name) if cfg is not None else p


def read_secret(name: str, cfg: Config | None = None) -> str:
    path = secret_path(name, cfg)
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError as e:
        raise ConfigError(f"cannot read secret file {path}: {e.strerror or e}") from e


def parse_config(text: str, path: Path | str = "<config>") -> Config:
    """The config in `text`; ConfigError names the file, line and key of every problem (edge.tomlconfig)."""
    return tomlconfig.parse(text, path, Config, "meal-district default-config", ConfigError)


def load_config(path: str | Path | None) -> Config:
    if path is None:
        return Config()
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError as e:
        raise ConfigError(f"{p}: config file not found (write one with `meal-district default-config > {p}`)") from e
    except UnicodeDecodeError as e:
        raise ConfigError(f"{p}: not UTF-8 text ({e})") from e
    return parse_config(text, p)


DEFAULT_CONFIG = '''\
# meal-district configuration. Every key is shown with its default; unknown keys are errors.
# Validate with: meal-district check-config FILE
# Secrets are never written here: *_file keys name files; a relative name is looked up in
# $CREDENTIALS_DIRECTORY (systemd LoadCredential=) first, then beside this file.

[district]
id = "xuhui"                  # the district the kiosks publish under ([centre] district on the kiosks)
topic_prefix = "meal/v1"      # [mqtt] topic_prefix on the kiosks
timezone = "Asia/Shanghai"    # "today" on the dashboard
name = ""                     # display name on the dashboard

[broker]
host = "127.0.0.1"            # the MQTT broker the kiosks publish to
port = 1883                   # 8883 with TLS
keepalive = 30                # seconds
username = ""                 # empty: anonymous
password_file = ""            # file holding the broker password
client_id = ""                # empty: meal-district-<district>-<host name>-<instance>; unique per serve process
session_expiry = 604800       # seconds the broker keeps our session and queues events while we are away

[broker.tls]
enabled = false               # TLS to the broker (recommended on any network but loopback)
ca_file = ""                  # CA that signed the broker's certificate; empty: the system's CAs
cert_file = ""                # client certificate (when the broker asks for one)
key_file = ""                 # its private key

[database]
url = ""                      # empty: SQLite in the state folder; production: postgresql+psycopg://meal@db/meal_district
password_file = ""            # file holding the database password (PostgreSQL)

[ingest]
group = "meal-district"       # shared-subscription group: every serve process of this district uses the same
accept_unsigned = false       # accept schema-1 events without signatures (only during the migration to signed events)
max_payload_bytes = 16384     # larger payloads are quarantined
quarantine_keep_bytes = 4096  # bytes of a quarantined payload that are kept
batch_max = 500               # events committed in one transaction at most
batch_wait_ms = 50            # a batch is committed after this long even if not full
receive_maximum = 2000        # events the broker may send before we acknowledge them (MQTT 5 Receive Maximum)
watch_interval = 2.0          # seconds between checks for sequence gaps, chain breaks and double subsidies

[web]
listen = "127.0.0.1:8090"     # dashboard (meal-district web); put a TLS proxy in front for other machines
session_key_file = ""         # cookie signing key; empty: session.key in the state folder (made on first start)
session_hours = 8.0           # a login lasts this long
secure_cookies = false        # true behind an HTTPS proxy

[metrics]
listen = "127.0.0.1:9464"     # Prometheus /metrics of serve; empty: off

[report]
daily_subsidy_cap_fen = 300   # subsidy per senior per local date, district-wide

[roster]
enabled = false               # the roster link (docs/roster.md): run `meal-district keys roster-init` first
signing_key_file = ""         # empty: credential meal-district-roster-key, else roster-signing.key in the state folder
transport_key_file = ""       # empty: credential meal-roster-key, else roster-transport.key in the state folder
template_key_file = ""        # empty: credential meal-district-template-key, else roster-template.key (state folder)
batch_changes = 500           # changes per message to a kiosk; a catch-up or snapshot goes in parts
push_interval = 0.2           # seconds between looks for new roster changes to push to the kiosks
max_upload_bytes = 1048576    # larger messages from kiosks are dropped
'''
