"""docker-compose.yml as Compose reads it: variables interpolated by the specification's rules."""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator, Mapping
from typing import Any

import yaml

from tests.deploy_support import ROOT

COMPOSE_FILE = ROOT / "docker-compose.yml"
OUR_IMAGES = re.compile(r"^mondrian-advisor(-worker)?:")
# Values for the required secrets; each must stay out of every command line.
SECRETS = {
    "POSTGRES_PASSWORD": "pg-secret-4f1c",
    "REDIS_PASSWORD": "redis-secret-9a2e",
    "FLOWER_USER": "ops",
    "FLOWER_PASSWORD": "flower-secret-77b0",
    "ADVISOR_GATEWAY_TOKEN": "gateway-secret-c3d5",
}


class MissingVariable(Exception):
    """A `${VAR:?message}` whose variable is unset: Compose refuses the file."""


_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """`$$`, `$VAR`, `${VAR}`, `${VAR:-default}`, `${VAR-default}`, `${VAR:?err}`, `${VAR:+alt}`."""
    out: list[str] = []
    i = 0
    while i < len(text):
        if text[i] != "$":
            out.append(text[i])
            i += 1
        elif text.startswith("$$", i):
            out.append("$")
            i += 2
        elif text.startswith("${", i):
            end = _closing_brace(text, i + 2)
            out.append(_substitute(text[i + 2 : end], env))
            i = end + 1
        elif m := _NAME.match(text, i + 1):
            out.append(env.get(m.group(), ""))
            i = m.end()
        else:
            raise ValueError(f"Invalid interpolation at {text[i:]!r} (a literal $ is $$)")
    return "".join(out)


def _closing_brace(text: str, start: int) -> int:
    depth = 1
    for j in range(start, len(text)):
        if text.startswith("${", j):
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return j
    raise ValueError(f"Unclosed ${{ in {text!r}")


def _substitute(expr: str, env: Mapping[str, str]) -> str:
    m = re.fullmatch(r"([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])(.*))?", expr, re.DOTALL)
    if m is None:
        raise ValueError(f"Invalid interpolation ${{{expr}}}")
    name, op, arg = m.groups()
    value = env.get(name)
    if op is None:
        return value or ""
    absent = value is None or (op.startswith(":") and value == "")
    if op.endswith("-"):
        return interpolate(arg, env) if absent else str(value)
    if op.endswith("?"):
        if absent:
            raise MissingVariable(f"{name}: {interpolate(arg, env)}")
        return str(value)
    return "" if absent else interpolate(arg, env)


def _walk(node: Any, env: Mapping[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, list):
        return [_walk(item, env) for item in node]
    if isinstance(node, dict):
        return {key: _walk(value, env) for key, value in node.items()}
    return node


def raw_compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
    return data


def compose(env: Mapping[str, str] = SECRETS) -> dict[str, Any]:
    """The compose model as Compose sees it: YAML merge keys resolved, variables interpolated."""
    result: dict[str, Any] = _walk(raw_compose(), env)
    return result


def services() -> dict[str, dict[str, Any]]:
    return dict(compose()["services"])


def strings(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, list):
        for item in node:
            yield from strings(item)
    elif isinstance(node, dict):
        for value in node.values():
            yield from strings(value)


def command_argv(command: Any) -> list[str]:
    return shlex.split(command) if isinstance(command, str) else [str(a) for a in command]


def duration_seconds(text: str) -> float:
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", text)
    assert parts and "".join(n + u for n, u in parts) == text, f"not a duration: {text!r}"
    return sum(float(n) * units[u] for n, u in parts)
