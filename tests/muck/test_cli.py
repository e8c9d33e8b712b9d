"""The CLI explains itself, refuses bad configuration clearly, and its docs are current."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from core.config import load_settings
from muck.cli_docs import render

ROOT = Path(__file__).resolve().parents[2]
MUCK = str(Path(sys.executable).with_name("muck"))


def test_cli_reference_is_up_to_date():
    assert (ROOT / "docs" / "cli.md").read_text() == render(), (
        "docs/cli.md is stale: run `python -m muck.cli_docs > docs/cli.md`"
    )


def test_every_command_and_option_has_help():
    import click

    from muck.cli import cli
    from muck.cli_docs import _walk

    render()  # registers the subcommands
    for path, command in _walk(cli, ["muck"]):
        assert command.help, f"{' '.join(path)} has no help text"
        for param in command.params:
            if isinstance(param, click.Option) and param.name != "help":
                assert param.help, f"{' '.join(path)} {param.opts[0]} has no help text"
    text = render()
    for command in ("migrate", "collect", "demo", "maintain", "zones", "bench ingest"):
        assert f"## `muck {command}`" in text


def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([MUCK, *args], capture_output=True, text=True, env=env, timeout=60)


def test_missing_database_url_is_a_clear_error_not_a_traceback(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    result = run("migrate", env=env)
    assert result.returncode != 0
    assert "MUCK_DATABASE_URL is not set" in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_config_file_names_the_key(tmp_path):
    bad = tmp_path / "city.toml"
    bad.write_text("[ingest]\nbatchsize = 3\n")
    result = run("--config", str(bad), "config", env={"PATH": "/usr/bin:/bin"})
    assert result.returncode == 2
    assert "unknown key ingest.batchsize" in result.stderr
    assert "Traceback" not in result.stderr


def test_migrate_and_maintain_commands(database_url):
    env = {"PATH": "/usr/bin:/bin", "MUCK_DATABASE_URL": database_url}
    result = run("migrate", env=env)
    assert result.returncode == 0, result.stderr
    assert "schema is up to date" in result.stdout
    result = run("maintain", env=env)
    assert result.returncode == 0, result.stderr
    assert "positions:" in result.stdout


def test_example_city_file_is_valid():
    settings = load_settings(ROOT / "config" / "city.example.toml")
    assert settings.city["name"] == "深圳市"
    assert settings.storage["retention_days"] == 365
