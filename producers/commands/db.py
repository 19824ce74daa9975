"""`advisor db upgrade`: bring ADVISOR_DATABASE_URL to the latest schema."""

from __future__ import annotations

import argparse

from jobs.settings import get_settings, mask_url
from producers.commands.output import Subparsers, emit_json
from store import migrate


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    url = get_settings().resolved_database_url
    migrate.upgrade(url)
    if args.json:
        emit_json({"database": mask_url(url), "schema": "latest"})
        return 0
    print(f"Database {mask_url(url)} is at the latest schema")
    return 0


def register(sub: Subparsers) -> None:
    db = sub.add_parser("db", help="database schema")
    db_sub = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    upgrade = db_sub.add_parser("upgrade", help="alembic upgrade head")
    upgrade.add_argument("--json", action="store_true")
    upgrade.set_defaults(handler=cmd_db_upgrade)
