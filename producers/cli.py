"""The `advisor` command: a thin main() over the subcommands of producers/commands/."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from typing import NoReturn

from sqlalchemy.exc import SQLAlchemyError

from jobs.errors import AdvisorError, summary
from jobs.settings import get_settings
from producers.commands import (
    capacity,
    db,
    deliveries,
    demo,
    feedback,
    guard,
    jobs,
    keys,
    metrics,
    prune,
    report,
    rollout,
    sweep,
)
from producers.commands.output import EXIT_FAILED, EXIT_TIMEOUT, EXIT_USAGE, Subparsers
from producers.errors import JobTimeout
from store.db import is_unmigrated, is_unreachable

# Every subcommand group registers here; its handler lets errors reach main(), which turns
# each into one line and an exit code.
COMMANDS: list[Callable[[Subparsers], None]] = [
    db.register,
    jobs.register,
    deliveries.register,
    feedback.register,
    rollout.register,
    demo.register,
    report.register,
    guard.register,
    capacity.register,
    sweep.register,
    metrics.register,
    keys.register,
    prune.register,
]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, not argparse's usage block: the reason and the way to more help.
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="advisor", description="Photo critique jobs: submit, watch, roll out.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for register in COMMANDS:
        register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        logging.basicConfig(
            level=get_settings().log_level,
            stream=sys.stderr,
            format="%(levelname)s %(name)s: %(message)s",
        )
        return int(args.handler(args))
    except JobTimeout as exc:
        print(f"advisor: {summary(exc)}", file=sys.stderr)
        return EXIT_TIMEOUT
    except AdvisorError as exc:
        print(f"advisor: error: {summary(exc)}", file=sys.stderr)
        return EXIT_FAILED
    except SQLAlchemyError as exc:
        print(f"advisor: {database_problem(exc)}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130
    except OSError as exc:
        # A file argument that cannot be read, a full disk: the reason is the message.
        print(f"advisor: error: {summary(exc, typed=True)}", file=sys.stderr)
        return EXIT_FAILED
    except Exception as exc:
        # The one catch-all: a bug, not bad input. One line here; the traceback in the log.
        logging.getLogger("advisor").debug("Unexpected error", exc_info=exc)
        print(
            f"advisor: internal error ({type(exc).__name__}); run with ADVISOR_LOG_LEVEL=DEBUG "
            "for the traceback and report it",
            file=sys.stderr,
        )
        return EXIT_FAILED


def database_problem(exc: SQLAlchemyError) -> str:
    """One line naming the kind of database failure and the way out."""
    if is_unmigrated(exc):
        return (
            f"database has no schema or an old one ({summary(exc, limit=200)}); "
            "run `advisor db upgrade`"
        )
    if is_unreachable(exc):
        return (
            f"database unreachable ({summary(exc, limit=300)}); check ADVISOR_DATABASE_URL and "
            "that the server is up"
        )
    return f"database error: {summary(exc, typed=True, limit=300)}"


if __name__ == "__main__":
    sys.exit(main())
