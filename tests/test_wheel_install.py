"""The wheel alone: built from what the image copies, installed in a fresh venv, it migrates."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text

from store.db import engine_for
from store.models import Base
from tests.deploy_support import ROOT

SETUPTOOLS = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
SCRIPTS_DIR = ROOT / "alembic"
INSTALLED_SCRIPTS = "store/_alembic"
JUNK = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build")

_PROBE = r"""
import json, alembic, jobs, store.migrate
print(json.dumps({
    "jobs": jobs.__file__,
    "scripts": str(store.migrate.script_location()),
    "alembic": alembic.__file__,
}))
"""


def _has_files(directory: Path) -> bool:
    # A directory holding only __pycache__ is what a move leaves behind, not a package.
    return any(p.is_file() and "__pycache__" not in p.parts for p in directory.rglob("*"))


def _package_dirs(name: str, directory: Path) -> set[str]:
    found = {name}
    for sub in sorted(directory.iterdir()):
        if sub.is_dir() and sub.name != "__pycache__" and _has_files(sub):
            found |= _package_dirs(f"{name}.{sub.name}", sub)
    return found


def test_every_package_directory_is_listed_for_the_wheel() -> None:
    roots = {p: ROOT / p for p in SETUPTOOLS["packages"] if "." not in p}
    roots |= {p: ROOT / d for p, d in SETUPTOOLS["package-dir"].items()}
    on_disk = set().union(*(_package_dirs(p, d) for p, d in roots.items()))
    listed = set(SETUPTOOLS["packages"])
    assert on_disk - listed == set(), "add these to [tool.setuptools] packages in pyproject.toml"
    assert listed - on_disk == set(), "these listed packages have no directory"


def test_the_repos_alembic_directory_never_shadows_the_library() -> None:
    # `python -c` puts the working directory first on sys.path, as `make lint` runs from here.
    assert not (SCRIPTS_DIR / "__init__.py").exists()
    proc = subprocess.run(
        [sys.executable, "-c", "import alembic, alembic.command; print(alembic.__file__)"],
        capture_output=True, text=True, timeout=60, cwd=ROOT, env=_clean_env(),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert not Path(proc.stdout.strip()).is_relative_to(SCRIPTS_DIR)


def _clean_env(**extra: str) -> dict[str, str]:
    """The environment without anything that would import the project from elsewhere."""
    dropped = ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV")
    env = {k: v for k, v in os.environ.items() if k not in dropped and not k.startswith("ADVISOR_")}
    return {**env, "PYTHONNOUSERSITE": "1", **extra}


def _run(argv: list[str], *, cwd: Path, timeout: float = 180, **env: str) -> str:
    proc = subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout, cwd=cwd, env=_clean_env(**env)
    )
    assert proc.returncode == 0, f"{shlex.join(argv)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def dockerfile_copies() -> list[tuple[str, str]]:
    """(source, destination) of each COPY in the Dockerfile, relative to its WORKDIR."""
    pairs = []
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if not line.startswith("COPY "):
            continue
        words = shlex.split(line)
        *sources, dest = [w for w in words[1:] if not w.startswith("--")]
        for source in sources:
            pairs.append((source, f"{dest}{Path(source).name}" if dest.endswith("/") else dest))
    return pairs


@dataclass(frozen=True)
class Installed:
    wheel: Path
    venv: Path
    site_packages: Path
    elsewhere: Path  # a working directory with no source in it


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    """Build the wheel (pip's isolated build: setuptools from its cache or the index); install."""
    root = tmp_path_factory.mktemp("wheel")
    # The image's build context: a file the Dockerfile forgets to copy is missing here too.
    context = root / "context"
    for source, dest in dockerfile_copies():
        src, target = ROOT / source, context / dest
        assert src.exists(), f"the Dockerfile copies {source}, which does not exist"
        if src.is_dir():
            shutil.copytree(src, target, ignore=JUNK)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target)
    dist = root / "dist"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    _run([*pip, "wheel", "--no-deps", "-w", str(dist), str(context)], cwd=root)
    [wheel] = dist.glob("mondrian_advisor-*.whl")
    venv = root / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=root)
    python = str(venv / "bin" / "python")
    _run([*pip, "--python", python, "install", "--no-deps", "--no-index", str(wheel)], cwd=root)
    where = "import sysconfig; print(sysconfig.get_path('purelib'))"
    site = Path(_run([python, "-c", where], cwd=root).strip())
    # Dependencies come from this test's environment; the project only from the wheel.
    deps = dict.fromkeys([sysconfig.get_path("purelib"), sysconfig.get_path("platlib")])
    (site / "_test_dependencies.pth").write_text("".join(f"{d}\n" for d in deps))
    elsewhere = root / "elsewhere"
    elsewhere.mkdir()
    return Installed(wheel, venv, site, elsewhere)


@pytest.mark.slow
def test_the_wheel_ships_the_migrations_inside_store_and_no_alembic_package(
    installed: Installed,
) -> None:
    names = set(zipfile.ZipFile(installed.wheel).namelist())
    assert {n for n in names if n.split("/")[0] == "alembic"} == set()
    expected = {
        f"{INSTALLED_SCRIPTS}/{p.relative_to(SCRIPTS_DIR).as_posix()}"
        for p in SCRIPTS_DIR.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    assert f"{INSTALLED_SCRIPTS}/env.py" in expected
    assert expected <= names, sorted(expected - names)


@pytest.mark.slow
def test_the_installed_project_comes_from_the_wheel_and_alembic_from_the_library(
    installed: Installed,
) -> None:
    found = json.loads(
        _run([str(installed.venv / "bin" / "python"), "-c", _PROBE], cwd=installed.elsewhere)
    )
    assert Path(found["jobs"]) == installed.site_packages / "jobs" / "__init__.py"
    assert Path(found["scripts"]) == installed.site_packages / INSTALLED_SCRIPTS
    alembic_file = Path(found["alembic"])
    assert alembic_file.name == "__init__.py"
    assert not alembic_file.is_relative_to(installed.venv)


@pytest.mark.slow
def test_the_installed_advisor_db_upgrade_migrates_a_fresh_database(
    installed: Installed, database_url: str
) -> None:
    out = _run(
        [str(installed.venv / "bin" / "advisor"), "db", "upgrade"],
        cwd=installed.elsewhere,
        ADVISOR_DATABASE_URL=database_url,
        ADVISOR_DATA_DIR=str(installed.elsewhere / "data"),
    )
    assert "is at the latest schema" in out
    engine = engine_for(database_url)
    assert set(inspect(engine).get_table_names()) == {*Base.metadata.tables, "alembic_version"}
    with engine.connect() as conn:
        versions = conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
    assert versions == [ScriptDirectory(str(SCRIPTS_DIR)).get_current_head()]
