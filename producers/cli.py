"""The `advisor` command: a thin main() over subcommands registered in COMMANDS."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from typing import NoReturn

from sqlalchemy.exc import SQLAlchemyError

from jobs.errors import AdvisorError, summary
from jobs.settings import get_settings
from producers import capacity, guard, report, sweep
from producers.commands import db, demo, jobs, metrics, rollout
from producers.commands.output import EXIT_FAILED, EXIT_TIMEOUT, EXIT_USAGE, Subparsers
from producers.errors import JobTimeout

# Every subcommand group registers here; `demo`, `report`, `guard` and `capacity` join it
# as producers/commands/<name>.py modules with a `register(sub)`.
COMMANDS: list[Callable[[Subparsers], None]] = [
    db.register,
    jobs.register,
    rollout.register,
    demo.register,
    report.add_cli,
    guard.add_cli,
    capacity.add_cli,
    sweep.add_cli,
    metrics.register,
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
        print(
            f"advisor: database error: {summary(exc)} (a new database? run `advisor db upgrade`)",
            file=sys.stderr,
        )
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
