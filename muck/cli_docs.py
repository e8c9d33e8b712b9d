"""Writes docs/cli.md from the real `--help` output, so the reference cannot drift.

    python -m muck.cli_docs > docs/cli.md

tests/muck/test_cli.py fails when docs/cli.md is out of date.
"""

from __future__ import annotations

import click

from muck.cli import _register_subcommands, cli


def _walk(command: click.Command, path: list[str]):
    yield path, command
    if isinstance(command, click.Group):
        for name in sorted(command.commands):
            yield from _walk(command.commands[name], [*path, name])


def render() -> str:
    _register_subcommands()
    parts = [
        "# Command-line reference",
        "",
        "Generated from `muck --help` by `python -m muck.cli_docs > docs/cli.md`; do not edit.",
        "",
    ]
    for path, command in _walk(cli, ["muck"]):
        # click caches a command's help option with the option names of the context it first
        # ran in (`-h, --help` under `muck`, `--help` alone): forget it, so the reference is
        # the same whatever ran before in this process (the test suite invokes commands).
        if hasattr(command, "_help_option"):
            command._help_option = None
        with click.Context(command, info_name=" ".join(path), terminal_width=100) as ctx:
            text = command.get_help(ctx)
        if hasattr(command, "_help_option"):
            command._help_option = None
        parts += [f"## `{' '.join(path)}`", "", "```", text, "```", ""]
    return "\n".join(parts)


if __name__ == "__main__":
    print(render(), end="")
