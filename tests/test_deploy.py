"""The compose stack and its image: schema, secrets, dependencies, and the commands it runs."""

from __future__ import annotations

import itertools
import json
import os
import re
import subprocess
import sys
from typing import Any

import jsonschema
import pytest

from jobs.settings import Settings
from tests.compose_model import (
    COMPOSE_FILE,
    OUR_IMAGES,
    SECRETS,
    MissingVariable,
    command_argv,
    compose,
    duration_seconds,
    raw_compose,
    services,
    strings,
)
from tests.deploy_support import PROJECT, ROOT, SCRIPTS, assert_parses, parse_with_entry_point

COMPOSE_SCHEMA = ROOT / "tests" / "data" / "compose-spec.json"
DOCKERFILE = ROOT / "Dockerfile"
EXTRAS = set(PROJECT["optional-dependencies"])

PROFILES = ("rabbitmq", "cpu-worker")
SECRET_KEY = re.compile(r"PASS|SECRET|TOKEN|AUTH", re.IGNORECASE)


# -- the compose file --------------------------------------------------------------------


def test_compose_file_matches_the_compose_specification_schema() -> None:
    schema = json.loads(COMPOSE_SCHEMA.read_text())
    validator = jsonschema.Draft7Validator(schema)
    errors = [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in validator.iter_errors(compose())
    ]
    assert errors == []
    # The schema bites: a misspelt key is rejected.
    broken = compose()
    broken["services"]["gateway"]["depends_onn"] = broken["services"]["gateway"].pop("depends_on")
    assert not validator.is_valid(broken)


def test_compose_refuses_to_start_without_each_required_secret() -> None:
    required = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*):\?", COMPOSE_FILE.read_text()))
    assert required == set(SECRETS)
    documented = (ROOT / "docs" / "deploy.md").read_text()
    for name in sorted(required):
        assert f"`{name}`" in documented, f"{name} is required but not in docs/deploy.md"
        with pytest.raises(MissingVariable, match=name):
            compose({k: v for k, v in SECRETS.items() if k != name})


def test_no_service_carries_a_literal_password() -> None:
    for name, service in raw_compose()["services"].items():
        env = service.get("environment") or {}
        assert isinstance(env, dict), f"{name}: use the mapping form of environment"
        for key, value in env.items():
            if SECRET_KEY.search(key) and value is not None:
                # Only interpolations, and none with a non-empty default.
                rest = re.sub(r"\$\{[A-Za-z_][A-Za-z0-9_]*(:?\?[^}]*|:-)?\}", "", str(value))
                assert rest in ("", ":"), f"{name}.{key} = {value!r} holds a literal"
        for text in strings(service):
            for password in re.findall(r"://[^/:@\s]*:([^@\s]+)@", text):
                assert password.startswith("${"), f"{name}: literal password in {text!r}"


def test_secrets_never_appear_on_a_command_line() -> None:
    # argv is visible to `ps` on the host; the environment is not.
    for name, service in services().items():
        words = [*command_argv(service.get("command", [])),
                 *command_argv(service.get("entrypoint", []))]  # fmt: skip
        for secret in SECRETS.values():
            assert secret not in " ".join(words), f"{name}'s command line carries a secret"


@pytest.mark.parametrize(
    "profiles",
    [combo for n in range(len(PROFILES) + 1) for combo in itertools.combinations(PROFILES, n)],
    ids=lambda combo: "+".join(combo) or "default",
)
def test_every_dependency_is_active_with_its_dependent(profiles: tuple[str, ...]) -> None:
    all_services = services()
    active = {
        n
        for n, s in all_services.items()
        if not s.get("profiles") or set(s["profiles"]) & set(profiles)
    }
    for name in sorted(active):
        for dep, spec in all_services[name].get("depends_on", {}).items():
            assert dep in all_services, f"{name} depends on unknown service {dep}"
            assert dep in active or spec.get("required") is False, (
                f"{name} depends on {dep}, which is off with profiles {profiles}"
            )


def test_services_with_the_database_wait_for_the_migration() -> None:
    all_services = services()
    migrate = all_services["migrate"]
    assert command_argv(migrate["command"]) == ["advisor", "db", "upgrade"]
    assert migrate["restart"] == "no"
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"
    users = [
        n for n, s in all_services.items() if "ADVISOR_DATABASE_URL" in s.get("environment", {})
    ]
    assert {"gateway", "cpu-worker"} <= set(users)
    for name in users:
        if name != "migrate":
            condition = all_services[name]["depends_on"]["migrate"]["condition"]
            assert condition == "service_completed_successfully", name
    worker = all_services["cpu-worker"]
    assert worker["depends_on"]["tiny-model"]["condition"] == "service_completed_successfully"
    assert command_argv(all_services["tiny-model"]["command"])[:2] == [
        "advisor-worker",
        "build-tiny-model",
    ]


def test_postgres_keeps_its_data_in_a_named_volume_and_reports_health() -> None:
    spec = compose()
    postgres = spec["services"]["postgres"]
    volume = postgres["volumes"][0].split(":")[0]
    assert volume in spec["volumes"]
    assert postgres["healthcheck"]["test"][:2] == ["CMD", "pg_isready"]
    for broker in ("redis", "rabbitmq"):
        assert spec["services"][broker]["healthcheck"]["test"], broker


def published(spec: dict[str, Any]) -> dict[str, list[str]]:
    return {name: [str(p) for p in s.get("ports", [])] for name, s in spec["services"].items()}


def test_only_the_gateway_listens_on_every_interface_unless_services_bind_says_otherwise() -> None:
    ports = {name: p for name, p in published(compose()).items() if p}
    assert ports.pop("gateway") == ["8000:8000"]
    assert set(ports) == {"redis", "rabbitmq", "postgres", "flower"}
    for name, bindings in ports.items():
        assert all(b.startswith("127.0.0.1:") for b in bindings), (name, bindings)
    lan = published(compose({**SECRETS, "SERVICES_BIND": "10.0.0.5"}))
    assert lan["redis"] == ["10.0.0.5:6379:6379"] and lan["gateway"] == ["8000:8000"]


def test_redis_needs_a_password_and_the_gateway_needs_api_keys_by_default() -> None:
    spec = services()
    assert "requirepass" in " ".join(spec["redis"]["command"])
    assert spec["gateway"]["environment"]["ADVISOR_GATEWAY_REQUIRE_KEYS"] == "true"


def test_every_project_service_shares_one_broker_and_one_database() -> None:
    envs = [
        s.get("environment", {})
        for s in services().values()
        if OUR_IMAGES.match(s.get("image", ""))
    ]
    brokers = {e["ADVISOR_BROKER_URL"] for e in envs if "ADVISOR_BROKER_URL" in e}
    databases = {e["ADVISOR_DATABASE_URL"] for e in envs if "ADVISOR_DATABASE_URL" in e}
    assert brokers == {f"redis://:{SECRETS['REDIS_PASSWORD']}@redis:6379/0"}
    assert databases == {
        f"postgresql+psycopg://advisor:{SECRETS['POSTGRES_PASSWORD']}@postgres:5432/advisor"
    }
    assert "ADVISOR_BROKER_URL" in services()["flower"]["environment"]


def test_the_worker_gets_time_to_finish_an_analysis_on_stop() -> None:
    grace = duration_seconds(services()["cpu-worker"]["stop_grace_period"])
    assert grace > Settings.model_fields["task_time_limit"].default


# -- the Dockerfile ----------------------------------------------------------------------


def test_dockerfile_installs_the_extras_each_image_asks_for() -> None:
    text = DOCKERFILE.read_text()
    assert re.search(r"^FROM python:3\.11-slim\b", text, re.MULTILINE)
    default = re.search(r"^ARG EXTRAS=(\S+)$", text, re.MULTILINE)
    assert default is not None
    assert 'pip install ".[${EXTRAS}]"' in text
    extras_by_image: dict[str, set[str]] = {}
    for name, service in services().items():
        if not OUR_IMAGES.match(service.get("image", "")):
            continue
        build = service["build"]
        assert build["context"] == "."
        extras = set(build.get("args", {}).get("EXTRAS", default.group(1)).split(","))
        assert extras <= EXTRAS, f"{name}: unknown extras {extras - EXTRAS}"
        # One tag, one set of extras: otherwise the last build wins silently.
        assert extras_by_image.setdefault(service["image"], extras) == extras, name
    assert "worker" in extras_by_image["mondrian-advisor-worker:latest"]
    assert "worker" not in extras_by_image["mondrian-advisor:latest"]
    assert {"gateway", "flower"} <= extras_by_image["mondrian-advisor:latest"]
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".env", ".venv", ".git"} <= set(ignored)


def _project_commands() -> list[tuple[str, list[str]]]:
    return [
        (name, command_argv(service["command"]))
        for name, service in services().items()
        if OUR_IMAGES.match(service.get("image", ""))
    ]


@pytest.mark.parametrize(
    ("service", "argv"),
    [pytest.param(n, a, id=n) for n, a in _project_commands() if a[0] != "celery"],
)
def test_each_service_command_is_accepted_by_the_real_entry_point(
    service: str, argv: list[str]
) -> None:
    program, *args = argv
    [result] = parse_with_entry_point(program, [args])
    assert_parses(program, args, result)
    if program == "advisor-worker" and args[0] == "run":
        assert result.args["variant"] == "base"


def test_every_project_service_runs_a_project_entry_point_or_celery() -> None:
    # `celery ... flower`: see test_flower_runs_the_workers_celery_app_with_real_flower_options.
    for name, argv in _project_commands():
        assert argv[0] in {*SCRIPTS, "celery"}, f"{name} runs unknown program {argv[0]!r}"


_FLOWER_DRIVER = r"""
import copy, json, sys
from celery.app.utils import find_app
from celery.bin.celery import celery
from flower.options import options

args, env = json.loads(sys.argv[1]), json.loads(sys.argv[2])
problems = []
ctx = celery.make_context("celery", list(args))
rest = ctx.args
subcommand = args[len(args) - len(rest) - 1]
if celery.get_command(ctx, subcommand) is None:
    problems.append(f"celery has no subcommand {subcommand!r}")
for arg in rest:
    if not arg.startswith("--") or "=" not in arg:
        problems.append(f"write flower options as --name=value: {arg!r}")
        continue
    name, value = arg[2:].split("=", 1)
    if not hasattr(options, name.replace("-", "_")):
        problems.append(f"flower has no option --{name} (flower silently ignores it)")
    else:
        copy.copy(options._options[name.replace("_", "-")]).parse(value)
for key, value in env.items():
    if not key.startswith("FLOWER_"):
        continue
    name = key[len("FLOWER_"):].lower()
    if name not in options:
        problems.append(f"{key} is no flower option (flower silently ignores it)")
        continue
    option = options._options[name.replace("_", "-")]
    parts = value.split(",") if option.multiple else [value]
    [option.type(part) for part in parts]
    if name == "basic_auth" and not all(p.count(":") == 1 for p in parts):
        problems.append("FLOWER_BASIC_AUTH must be user:password")
app = find_app(ctx.params["app"]) if ctx.params["app"] else None
print(json.dumps({
    "subcommand": subcommand,
    "problems": problems,
    "app_broker": app.conf.broker_url if app else None,
    "is_worker_app": app is __import__("advisor_worker.celery_app", fromlist=["app"]).app,
    "mlx": sorted(m for m in sys.modules if m == "mlx" or m.startswith(("mlx.", "mlx_vlm"))),
}))
"""


def test_flower_runs_the_workers_celery_app_with_real_flower_options() -> None:
    flower = services()["flower"]
    argv = command_argv(flower["command"])
    assert argv[0] == "celery"
    env = {k: str(v) for k, v in flower["environment"].items() if v is not None}
    proc = subprocess.run(
        [sys.executable, "-c", _FLOWER_DRIVER, json.dumps(argv[1:]), json.dumps(env)],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
        env={**{k: v for k, v in os.environ.items() if not k.startswith("ADVISOR_")}, **env},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["subcommand"] == "flower"
    assert report["problems"] == []
    assert "FLOWER_BASIC_AUTH" in env
    # The same broker as the workers, read from ADVISOR_BROKER_URL, not from argv.
    assert report["app_broker"] == env["ADVISOR_BROKER_URL"]
    # The workers' own app (the analyze task is registered on it at each worker's boot).
    assert report["is_worker_app"] is True
    # The Flower image has no MLX: importing the app must not need it.
    assert report["mlx"] == []
