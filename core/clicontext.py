"""What every package's CLI needs from the root: the settings of this invocation.

Package CLIs (`telemetry/cli.py`, `geofence/cli.py`, …) take `MuckContext` through
`pass_ctx`; the root group in `muck/cli.py` creates it. It lives in core so that packages
never import the composition root.
"""

from __future__ import annotations

import click

from core.config import Settings, load_settings


class MuckContext:
    def __init__(self, config_path: str | None) -> None:
        self.config_path = config_path
        self._settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings(self.config_path)
        return self._settings


pass_ctx = click.make_pass_decorator(MuckContext)
