"""docker-compose.yml without a Docker engine: valid against the Compose specification's
JSON schema (vendored in deploy/schema/), every image pinned, every mounted file present,
every command a real `muck` subcommand with options it accepts, every variable in
.env.example, and the broker's configuration the same file the broker tests start."""

from __future__ import annotations

import json
import re
from pathlib import Path

import click
import jsonschema
import pytest
import yaml

from tests.services import PRODUCTION_BROKER_CONFIG

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
LONG_RUNNING = {"db", "broker", "collector", "scheduler", "web", "gateway"}


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_valid_against_the_compose_specification(compose):
    schema = json.loads((ROOT / "deploy" / "schema" / "compose-spec.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(compose), key=str)
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors)


def test_the_schema_catches_a_mistake(compose):
    """The validation is not vacuous: a misspelt key fails it."""
    schema = json.loads((ROOT / "deploy" / "schema" / "compose-spec.json").read_text())
    broken = json.loads(json.dumps(compose))
    broken["services"]["web"]["restart_policy"] = "always"
    assert list(jsonschema.Draft7Validator(schema).iter_errors(broken))


def test_every_image_is_pinned(compose):
    for name, service in compose["services"].items():
        image = service.get("image")
        assert image, f"{name}: no image"
        repo, _, tag = image.rpartition(":")
        assert repo and tag and tag != "latest" and "$" not in tag, f"{name}: {image}"
    dockerfile = (ROOT / "Dockerfile").read_text()
    base = re.search(r"^FROM (\S+)", dockerfile, re.M).group(1)
    assert re.fullmatch(r"python:\d+\.\d+\.\d+-slim-\w+", base), base


def test_every_mounted_file_exists_and_volumes_are_declared(compose):
    declared = set(compose.get("volumes", {}))
    for name, service in compose["services"].items():
        for mount in service.get("volumes", []):
            source = mount.split(":", 1)[0]
            if source.startswith((".", "/")):
                assert (ROOT / source).exists(), f"{name}: {source} does not exist"
            else:
                assert source in declared, f"{name}: volume {source} not declared"


def test_long_running_services_restart_and_report_health(compose):
    for name in LONG_RUNNING:
        service = compose["services"][name]
        assert service.get("restart") == "unless-stopped", name
        assert "healthcheck" in service, f"{name}: no health check"
    for one_shot in ("migrate", "broker-auth", "broker-certs"):
        assert compose["services"][one_shot]["restart"] == "no"


def _muck_root() -> click.Group:
    from muck.cli import _register_subcommands, cli

    _register_subcommands()
    return cli


def test_every_command_is_a_real_muck_subcommand(compose):
    cli = _muck_root()
    checked = []
    for name, service in compose["services"].items():
        command = service.get("command")
        if not command or command[0] != "muck":
            continue
        args = [re.sub(r"\$\{(\w+)\}", r"\1", a) for a in command[1:]]
        group, path = cli, []
        while isinstance(group, click.Group) and args and not args[0].startswith("-"):
            sub = group.get_command(click.Context(group), args[0])
            if sub is None:
                break
            path.append(args.pop(0))
            group = sub
        assert not isinstance(group, click.Group) and group is not cli, (
            f"{name}: muck {' '.join(command[1:])} is not a muck subcommand"
        )
        # Parses the options as the real command would, without running it.
        group.make_context(" ".join(path), list(args), resilient_parsing=False)
        checked.append(name)
    assert {"migrate", "broker-auth", "broker-certs", "collector", "scheduler", "gateway"} <= set(
        checked
    )


def test_the_web_service_runs_the_app_factory(compose):
    command = compose["services"]["web"]["command"]
    assert command[0] == "gunicorn"
    module, _, factory = command[-1].partition(":")
    imported = __import__(module)
    assert factory == "create_app()" and callable(imported.create_app)


def test_the_broker_runs_the_configuration_the_tests_start(compose):
    mounts = compose["services"]["broker"]["volumes"]
    config = [m for m in mounts if m.endswith(":/mosquitto/config/mosquitto.conf:ro")]
    assert len(config) == 1
    assert (ROOT / config[0].split(":")[0]).resolve() == PRODUCTION_BROKER_CONFIG.resolve()
    text = PRODUCTION_BROKER_CONFIG.read_text()
    for path in ("/mosquitto/auth/passwd", "/mosquitto/auth/acl", "/mosquitto/certs/"):
        assert path in text
    auth = compose["services"]["broker-auth"]["command"]
    assert "/mosquitto/auth/passwd" in auth and "/mosquitto/auth/acl" in auth


def test_every_variable_is_in_the_env_example(compose):
    used = set(re.findall(r"\$\{(\w+)", COMPOSE.read_text()))
    example = (ROOT / ".env.example").read_text()
    defined = set(re.findall(r"^#? ?(\w+)=", example, re.M))
    assert used - defined == set()
    assert "MUCK_SECRET_KEY" in defined
