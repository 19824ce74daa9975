"""The `advisor` command: a thin main() over the subcommands of producers/commands/."""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import re
import sys
from typing import TYPE_CHECKING, NoReturn

from jobs.errors import AdvisorError, BrokerUnreachable, summary
from producers.commands.exits import EXIT_FAILED, EXIT_TIMEOUT, EXIT_USAGE
from producers.errors import JobTimeout, PublishFailed, UsageError

if TYPE_CHECKING:
    from sqlalchemy.exc import SQLAlchemyError

# Every subcommand group, in --help order: its module under producers.commands (with a
# `register(sub)`) and the commands it adds with their one-line help. Only the module of the
# command given is imported, so `advisor --help` and `advisor status` skip scipy, the report
# and celery; tests/producers/test_cli_startup.py fails when this table drifts from them.
COMMANDS: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = (
    ("db", (("db", "database schema"),)),
    ("jobs", (
        ("submit", "submit photos for analysis"),
        ("status", "show a job"),
        ("wait", "wait for a job, with a progress bar on stderr"),
        ("cancel", "cancel a queued or running job"),
        ("republish", "send queued jobs whose publish failed"),
    )),
    ("deliveries", (("deliveries", "a job's outcome notices (tasks, webhooks); `deliveries "
                                   "retry` resends undelivered"),)),
    ("feedback", (("feedback", "record a user's rating of a job's critique"),)),
    ("rollout", (("rollout", "per-advisor traffic split"),)),
    ("demo", (("demo", "run the main job end to end on the embedded default"),)),
    ("report", (("report", "A/B report: always-valid verdicts, outcomes, scores, SRM, "
                           "score copy"),)),
    ("guard", (("guard", "roll a breaching variant back to weight 0"),)),
    ("capacity", (("capacity", "workers each queue needs for the split"),)),
    ("sweep", (("sweep", "re-queue jobs of dead workers, resend lost and unpublished jobs"),)),
    ("metrics", (("metrics", "Prometheus metrics without the gateway"),)),
    ("keys", (("keys", "API keys of the HTTP gateway"),)),
    ("prune", (("prune", "delete stored images no queued or running job needs, past "
                         "retention"),)),
    ("config", (("config", "the configuration reference (every ADVISOR_* setting)"),)),
)  # fmt: skip


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, not argparse's usage block: the reason and the way to more help.
        raise UsageError(f"{message} (see --help)")


def _command_in(argv: list[str]) -> str | None:
    """The subcommand named in `argv` (its first word that is not an option)."""
    return next((word for word in argv if not word.startswith("-")), None)


def build_parser(argv: list[str] | None = None, *, full: bool = False) -> argparse.ArgumentParser:
    """The parser for `argv`: the given command's module registers its commands for real;
    every other command is a name and a help line (`full`: every module registers)."""
    wanted = _command_in(sys.argv[1:] if argv is None else argv)
    parser = _Parser(prog="advisor", description="Photo critique jobs: submit, watch, roll out.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMANDS")
    for module, commands in COMMANDS:
        if full or wanted in {name for name, _help in commands}:
            importlib.import_module(f"producers.commands.{module}").register(sub)
        else:
            for name, help_text in commands:
                sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else argv
    # Known before parsing: a usage error under --json is JSON too.
    as_json = "--json" in words
    try:
        args = build_parser(argv).parse_args(argv)
    except UsageError as exc:
        return _failed(exc, f"advisor: error: {exc}", EXIT_USAGE, as_json)
    command = " ".join(w for w in words if not w.startswith("-"))[:80]
    try:
        from jobs.settings import get_settings

        logging.basicConfig(
            level=get_settings().log_level,
            stream=sys.stderr,
            format="%(levelname)s %(name)s: %(message)s",
        )
        return int(args.handler(args))
    except UsageError as exc:
        return _failed(exc, f"advisor: error: {exc}", EXIT_USAGE, as_json)
    except JobTimeout as exc:
        return _failed(exc, f"advisor: {summary(exc)}", EXIT_TIMEOUT, as_json)
    except AdvisorError as exc:
        if isinstance(exc, BrokerUnreachable | PublishFailed):
            return _outage(exc, f"advisor: error: {summary(exc)}", as_json, command, "")
        return _failed(exc, f"advisor: error: {summary(exc)}", EXIT_FAILED, as_json)
    except KeyboardInterrupt:
        return 130
    except OSError as exc:
        # A file argument that cannot be read, a full disk: the reason is the message.
        line = f"advisor: error: {summary(exc, typed=True)}"
        return _failed(exc, line, EXIT_FAILED, as_json)
    except Exception as exc:
        from sqlalchemy.exc import SQLAlchemyError  # loaded already if it raised one

        if isinstance(exc, SQLAlchemyError):
            line, way_out = database_problem(exc)
            return _outage(exc, f"advisor: {line}; {way_out}", as_json, command, way_out)
        return _internal(exc, as_json, command)


def _failed(
    exc: BaseException, line: str, code: int, as_json: bool, message: str | None = None,
    **extra: str,
) -> int:  # fmt: skip
    """The one line on stderr; with --json also `{"error": kind, "message": ...}` on stdout."""
    print(line, file=sys.stderr)
    if as_json:
        kind = re.sub(r"(?<!^)(?=[A-Z])", "_", type(exc).__name__).lower()
        if message is None:
            message = line.removeprefix("advisor: ").removeprefix("error: ")
        print(json.dumps({"error": kind, "message": message, "exit_code": code, **extra}))
    return code


def _outage(exc: BaseException, line: str, as_json: bool, command: str, way_out: str) -> int:
    """A database, broker or unexpected failure: stderr is the operator's and names it; the
    JSON a program reads has the fixed text and the reference only (no host, URL or SQL)."""
    if not as_json:
        return _failed(exc, line, EXIT_FAILED, False)
    from jobs.incidents import incident

    found = incident(exc, f"advisor {command}", with_traceback=False)
    message = f"{found.text}; {way_out}" if way_out else found.text
    return _failed(exc, line, EXIT_FAILED, True, message, reference=found.reference)


def _internal(exc: BaseException, as_json: bool, command: str) -> int:
    """The one catch-all: a bug, not bad input. Its traceback goes to the log at ERROR under an
    incident reference, whatever the log level, so a failure seen once can be read afterwards;
    the last stderr line and the JSON name the reference, and the JSON nothing internal."""
    from jobs.incidents import IncidentKind, incident

    found = incident(exc, f"advisor {command}", kind=IncidentKind.INTERNAL)
    line = (
        f"advisor: internal error ({type(exc).__name__}, reference {found.reference}); its "
        "traceback is logged above: report it"
    )
    return _failed(exc, line, EXIT_FAILED, as_json, found.text, reference=found.reference)


def database_problem(exc: SQLAlchemyError) -> tuple[str, str]:
    """The kind of database failure in one line (with the driver's text), and the way out."""
    from store.db import is_unmigrated, is_unreachable

    if is_unmigrated(exc):
        return (
            f"database has no schema or an old one ({summary(exc, limit=200)})",
            "run `advisor db upgrade`",
        )
    if is_unreachable(exc):
        return (
            f"database unreachable ({summary(exc, limit=300)})",
            "check ADVISOR_DATABASE_URL and that the server is up",
        )
    return f"database error: {summary(exc, typed=True, limit=300)}", "see the log"


if __name__ == "__main__":
    sys.exit(main())
