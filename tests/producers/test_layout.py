"""The producer side's layout: no import circles; the client <- ops <- commands and gateway."""

from __future__ import annotations

import ast
import re
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import producers

ROOT = Path(producers.__file__).parent
FRONTS = ("producers.commands", "producers.gateway", "producers.cli")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(ROOT.rglob("*.py"))}


def is_in(module: str, *packages: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


def imports_of(module: str) -> set[str]:
    """The producers modules `module` imports, at any depth (TYPE_CHECKING blocks included)."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            # `from producers.ops import report` imports the module producers.ops.report.
            found.update(
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base
                for alias in node.names
            )
    return {name for name in found if name in MODULES and name != module}


GRAPH = {module: imports_of(module) for module in MODULES}


def test_the_walk_sees_the_producer_modules_and_their_imports() -> None:
    assert {"producers.client", "producers.ops.report", "producers.cli"} <= set(MODULES)
    assert "producers.ops.report" in GRAPH["producers.ops.report_text"]
    # producers.cli imports each command module by name, only when its command runs.
    assert "producers.ops.capacity" in GRAPH["producers.commands.capacity"]


def test_producer_modules_import_each_other_without_a_circle() -> None:
    try:
        tuple(TopologicalSorter(GRAPH).static_order())
    except CycleError as exc:
        raise AssertionError(f"import circle: {' -> '.join(exc.args[1])}") from None


def test_neither_the_client_nor_the_operations_import_the_cli_or_the_gateway() -> None:
    wrong = {
        module: sorted(name for name in names if is_in(name, *FRONTS))
        for module, names in GRAPH.items()
        if not is_in(module, *FRONTS)
    }
    assert {module: names for module, names in wrong.items() if names} == {}


def test_the_client_side_does_not_import_the_operations() -> None:
    client_side = [m for m in GRAPH if not is_in(m, "producers.ops", *FRONTS)]
    assert "producers.router" in client_side and "producers.outbox" in client_side
    wrong = {m: sorted(n for n in GRAPH[m] if is_in(n, "producers.ops")) for m in client_side}
    assert {module: names for module, names in wrong.items() if names} == {}


def test_operations_are_given_their_dependencies_not_a_client() -> None:
    ops = [m for m in GRAPH if is_in(m, "producers.ops")]
    assert "producers.ops.sweep" in ops
    assert [m for m in ops if "producers.client" in GRAPH[m] or "producers" in GRAPH[m]] == []


# `client.repository.find(...)`: a caller reaching through the client for one of its pieces.
CHAIN = re.compile(r"\bclient\.[a-z_]+\.|\.publisher\.app\b")
# The composition root takes its own pieces apart; nobody else does.
CHAIN_HOME = ROOT / "services.py"
SCANNED = [ROOT, ROOT.parent / "tests", ROOT.parent / "bench"]


def chains_in(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if CHAIN.search(line)]


def test_the_chain_check_flags_a_reach_through_and_passes_a_plain_call() -> None:
    assert chains_in("rows = client.repository.find()\napp = x.publisher.app") == [
        "rows = client.repository.find()",
        "app = x.publisher.app",
    ]
    assert chains_in("job = gateway.client.status(job_id)\nhttp_client.get('/')") == []


def test_nothing_reaches_through_a_client_attribute_chain() -> None:
    found = {
        str(path.relative_to(ROOT.parent)): chains
        for folder in SCANNED
        for path in sorted(folder.rglob("*.py"))
        if path != CHAIN_HOME and path != Path(__file__)
        for chains in [chains_in(path.read_text())]
        if chains
    }
    assert found == {}


def test_the_client_the_gateway_and_the_commands_build_no_store_of_their_own() -> None:
    # One home for construction: producers.services (ops' beat tasks aside, which run alone).
    builders = {"Repository", "RolloutStore", "Router", "Publisher", "Outbox", "FeedbackStore",
                "KeyStore", "DeliveryStore", "Courier", "engine_for"}  # fmt: skip
    fronts = [m for m in MODULES if is_in(m, "producers.client", *FRONTS)]
    assert "producers.gateway.service" in fronts and "producers.commands.sweep" in fronts
    built = {
        module: sorted(
            node.func.id
            for node in ast.walk(ast.parse(MODULES[module].read_text()))
            if isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in builders
        )
        for module in fronts
    }
    # `advisor status` reads one row without loading the broker client: its own engine only.
    built["producers.commands.output"].remove("engine_for")
    assert {module: names for module, names in built.items() if names} == {}
