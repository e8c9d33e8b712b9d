"""City settings: one TOML file of documented defaults, overridden by a city's own file.

Service locations come from the environment (MUCK_DATABASE_URL, MUCK_MQTT_URL) so that the
same configuration file serves production, CI and a laptop.
"""

from __future__ import annotations

import os
import ssl
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

DEFAULTS_PATH = Path(__file__).with_name("defaults.toml")


class ConfigError(ValueError):
    """A configuration file or variable that cannot be used; the message says which key."""


@dataclass(frozen=True)
class MqttEndpoint:
    host: str
    port: int
    username: str | None = None
    password: str | None = None
    tls: bool = False  # mqtts://: TLS, the server's certificate checked ([mqtt] tls_ca_file)

    @classmethod
    def parse(cls, url: str) -> MqttEndpoint:
        parsed = urlparse(url)
        if parsed.scheme not in ("mqtt", "tcp", "mqtts", "ssl"):
            raise ConfigError(
                "MUCK_MQTT_URL must look like mqtt://user:pass@host:port (mqtts:// for TLS), "
                f"got {url!r}"
            )
        tls = parsed.scheme in ("mqtts", "ssl")
        return cls(
            host=parsed.hostname or "127.0.0.1",
            port=parsed.port or (8883 if tls else 1883),
            username=unquote(parsed.username) if parsed.username else None,
            password=unquote(parsed.password) if parsed.password else None,
            tls=tls,
        )

    @property
    def scheme(self) -> str:
        return "mqtts" if self.tls else "mqtt"

    def url(self) -> str:
        auth = ""
        if self.username:
            auth = self.username + (f":{self.password}" if self.password else "") + "@"
        return f"{self.scheme}://{auth}{self.host}:{self.port}"

    def safe_url(self) -> str:
        """The URL for logs and messages: the password replaced by `***`."""
        auth = f"{self.username}{':***' if self.password else ''}@" if self.username else ""
        return f"{self.scheme}://{auth}{self.host}:{self.port}"


@dataclass(frozen=True)
class Settings:
    """Everything configurable, as nested sections of plain values."""

    sections: dict[str, dict[str, Any]]
    database_url: str | None = None
    mqtt_url: str | None = None
    source: tuple[str, ...] = field(default_factory=tuple)

    def __getitem__(self, section: str) -> dict[str, Any]:
        return self.sections[section]

    @property
    def city(self) -> dict[str, Any]:
        return self.sections["city"]

    @property
    def mqtt(self) -> dict[str, Any]:
        return self.sections["mqtt"]

    @property
    def ingest(self) -> dict[str, Any]:
        return self.sections["ingest"]

    @property
    def storage(self) -> dict[str, Any]:
        return self.sections["storage"]

    @property
    def thresholds(self) -> dict[str, Any]:
        return self.sections["thresholds"]

    def mqtt_endpoint(self) -> MqttEndpoint:
        if not self.mqtt_url:
            raise ConfigError("MUCK_MQTT_URL is not set")
        return MqttEndpoint.parse(self.mqtt_url)

    def mqtt_tls_context(self) -> ssl.SSLContext | None:
        """The client TLS context for an mqtts:// MUCK_MQTT_URL (None for mqtt://): the
        broker's certificate is checked against `[mqtt] tls_ca_file` (the system's CAs when
        empty) and its host name; `tls_cert_file`/`tls_key_file` add a client certificate
        for brokers that ask for one."""
        if not self.mqtt_endpoint().tls:
            return None
        mqtt = self.sections["mqtt"]
        ca, cert, key = mqtt["tls_ca_file"], mqtt["tls_cert_file"], mqtt["tls_key_file"]
        try:
            context = ssl.create_default_context(cafile=ca or None)
            if cert:
                context.load_cert_chain(cert, key or None)
        except (OSError, ssl.SSLError) as exc:
            files = ", ".join(
                f"{k} = {v!r}"
                for k, v in (("tls_ca_file", ca), ("tls_cert_file", cert), ("tls_key_file", key))
                if v
            )
            raise ConfigError(f"[mqtt] TLS files ({files}): {exc}") from None
        return context

    def with_overrides(self, **sections: dict[str, Any]) -> Settings:
        """A copy with some keys replaced; used by tests and benchmarks."""
        merged = {name: dict(values) for name, values in self.sections.items()}
        for name, values in sections.items():
            merged.setdefault(name, {}).update(values)
        return Settings(merged, self.database_url, self.mqtt_url, self.source)


def _merge(base: dict[str, Any], override: dict[str, Any], origin: str, path: str = "") -> None:
    """Override `base` in place with `override`, key by key (nested tables merge too)."""
    for key, value in override.items():
        name = f"{path}{key}"
        if key not in base:
            kind = "section" if not path else "key"
            raise ConfigError(f"{origin}: unknown {kind} {name}")
        expected = base[key]
        if isinstance(expected, dict):
            if not isinstance(value, dict):
                raise ConfigError(f"{origin}: [{name}] must be a table")
            _merge(expected, value, origin, name + ".")
            continue
        kind = type(expected)
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ConfigError(f"{origin}: {name} must be {kind.__name__}, got {value!r}")
        base[key] = value


def load_settings(path: str | os.PathLike[str] | None = None) -> Settings:
    """Defaults, then the file at `path` or $MUCK_CONFIG, then service URLs from the environment."""
    with DEFAULTS_PATH.open("rb") as fh:
        sections = tomllib.load(fh)
    sources = [str(DEFAULTS_PATH)]
    path = path or os.environ.get("MUCK_CONFIG") or None
    if path:
        try:
            with open(path, "rb") as fh:
                override = tomllib.load(fh)
        except FileNotFoundError as exc:
            raise ConfigError(f"configuration file not found: {path}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: {exc}") from exc
        _merge(sections, override, str(path))
        sources.append(str(path))
    return Settings(
        sections,
        database_url=os.environ.get("MUCK_DATABASE_URL") or None,
        mqtt_url=os.environ.get("MUCK_MQTT_URL") or None,
        source=tuple(sources),
    )


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


def write_city_settings(path: str | os.PathLike[str], values: dict[str, Any]) -> None:
    """Set keys of the [city] section of a city settings file, keeping everything else in it
    (comments included); the file and the section are created when missing. The result is
    read back, so a file this cannot edit is left as it was."""
    path = Path(path)
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    start = next((i for i, line in enumerate(lines) if line.strip() == "[city]"), None)
    if start is None:
        if lines and lines[-1].strip():
            lines.append("")
        lines.append("[city]")
        start = len(lines) - 1
    end = next(
        (i for i in range(start + 1, len(lines)) if lines[i].lstrip().startswith("[")), len(lines)
    )
    pending = dict(values)
    for i in range(start + 1, end):
        key = lines[i].split("=", 1)[0].strip()
        if "=" in lines[i] and key in pending and not lines[i].lstrip().startswith("#"):
            lines[i] = f"{key} = {_toml_value(pending.pop(key))}"
    insert = [f"{key} = {_toml_value(value)}" for key, value in pending.items()]
    while end > start + 1 and not lines[end - 1].strip():
        end -= 1
    lines[end:end] = insert
    text = "\n".join(lines) + "\n"
    try:
        parsed = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: cannot update its [city] section: {exc}") from None
    if any(parsed.get("city", {}).get(k) != v for k, v in values.items()):
        raise ConfigError(f"{path}: cannot update its [city] section")
    path.write_text(text, encoding="utf-8")
