"""What every package's CLI needs from the root: the settings of this invocation, a database
connection that fails with one clear line, and times read and shown in city time.

Package CLIs (`telemetry/cli.py`, `geofence/cli.py`, …) take `MuckContext` through
`pass_ctx`; the root group in `muck/cli.py` creates it. It lives in core so that packages
never import the composition root.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from zoneinfo import ZoneInfo

import click

from core.config import ConfigError, Settings, load_settings


class MuckContext:
    def __init__(self, config_path: str | None) -> None:
        self.config_path = config_path
        self._settings: Settings | None = None
        # Hooks the composition root hangs on a package's command, so that a package lower
        # on the data path can let a higher one speak without importing it (the permit
        # import asks credit for blacklist warnings: "permits.imported").
        self.hooks: dict[str, list[Callable[..., list[str]]]] = {}

    def add_hook(self, name: str, hook: Callable[..., list[str]]) -> None:
        self.hooks.setdefault(name, []).append(hook)

    def run_hooks(self, name: str, *args, **kwargs) -> list[str]:
        """Every hook of `name` in order; their messages, concatenated."""
        out: list[str] = []
        for hook in self.hooks.get(name, ()):
            out.extend(hook(*args, **kwargs))
        return out

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings(self.config_path)
        return self._settings

    def connect(self):
        """A database connection; a missing URL or an unreachable server is a one-line
        ClickException, not a traceback."""
        from core.db import connect_settings

        try:
            return connect_settings(self.settings)
        except ConfigError as exc:
            raise click.ClickException(str(exc)) from None
        except Exception as exc:  # psycopg2.OperationalError and friends: no traceback
            raise click.ClickException(f"cannot connect to the database: {exc}".strip()) from None


pass_ctx = click.make_pass_decorator(MuckContext)


def parse_time(text: str, tz: str) -> dt.datetime:
    """'now', an ISO time with offset, or a local 'YYYY-MM-DD[ HH:MM[:SS]]' (city time)."""
    text = text.strip()
    if text.lower() == "now":
        return dt.datetime.now(dt.UTC)
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(
            f"{text!r} is not a time: use now, YYYY-MM-DD, 'YYYY-MM-DD HH:MM' (local) or ISO "
            "with an offset"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=ZoneInfo(tz))
    return when


def format_time(when: dt.datetime | None, tz: str) -> str:
    """A time in city local time for CLI output; '-' for none."""
    if when is None:
        return "-"
    return when.astimezone(ZoneInfo(tz)).strftime("%Y-%m-%d %H:%M:%S")
