"""`advisor config --markdown`: the configuration reference, generated from Settings."""

from __future__ import annotations

import argparse

from producers.commands.output import Subparsers


def cmd_config(args: argparse.Namespace) -> int:
    from jobs.settings_reference import render

    print(render(), end="")
    return 0


def register(sub: Subparsers) -> None:
    p = sub.add_parser("config", help="the configuration reference (every ADVISOR_* setting)")
    p.add_argument("--markdown", action="store_true", required=True,
                   help="print docs/configuration.md, generated from the Settings")  # fmt: skip
    p.set_defaults(handler=cmd_config)
