"""`advisor keys create | list | revoke`: the gateway's API keys (stored only as a sha256)."""

from __future__ import annotations

import argparse
import sys

from jobs.settings import get_settings
from producers.commands.output import Subparsers, emit_json, services
from producers.keys import KeyInfo, KeyStore, Scope


def key_store() -> KeyStore:
    return services().keys


def _describe(info: KeyInfo) -> dict[str, object]:
    return {
        "name": info.name, "prefix": info.prefix, "scope": info.scope.value,
        "rate_per_minute": info.rate_per_minute, "max_in_flight": info.max_in_flight,
        "created_at": info.created_at.isoformat() if info.created_at else None,
        "revoked_at": info.revoked_at.isoformat() if info.revoked_at else None,
    }  # fmt: skip


def cmd_create(args: argparse.Namespace) -> int:
    scope = Scope.READ if args.read_only else Scope.INTAKE
    info, key = key_store().create(
        args.name, scope, rate_per_minute=args.rate_per_minute, max_in_flight=args.max_in_flight
    )
    if args.json:
        emit_json({**_describe(info), "key": key})
        return 0
    # The key alone on stdout (for `KEY=$(advisor keys create app)`); the rest on stderr.
    print(key)
    print(f"advisor: created {info.scope.value} key {info.name!r} ({info.prefix}...); it is "
          "shown only now, store it safely", file=sys.stderr)  # fmt: skip
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    keys = key_store().all()
    if args.json:
        emit_json([_describe(k) for k in keys])
        return 0
    settings = get_settings()
    for k in keys:
        state = f"revoked {k.revoked_at:%Y-%m-%d %H:%M}" if k.revoked_at else "active"
        rate = k.rate_per_minute or f"{settings.key_rate_per_minute} (default)"
        in_flight = k.max_in_flight or f"{settings.key_max_in_flight} (default)"
        print(f"{k.name:<24} {k.prefix}... {k.scope.value:<6} {state:<24} "
              f"rate/min={rate} in-flight={in_flight}")  # fmt: skip
    if not keys:
        print("No keys: the gateway's intake is open unless ADVISOR_GATEWAY_REQUIRE_KEYS=true",
              file=sys.stderr)  # fmt: skip
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    info = key_store().revoke(args.name)
    if args.json:
        emit_json(_describe(info))
        return 0
    refresh = get_settings().gateway_keys_refresh_seconds
    print(f"Revoked {info.name!r}; gateways refuse it within {refresh:g}s")
    return 0


def _limit(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def register(sub: Subparsers) -> None:
    p = sub.add_parser("keys", help="API keys of the HTTP gateway")
    k_sub = p.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    create = k_sub.add_parser("create", help="make a key; printed once, stored hashed")
    create.add_argument("name", help="who the key is for, e.g. photo-app")
    create.add_argument(
        "--read-only",
        action="store_true",
        help="for /dashboard/data, /report and /metrics instead of intake",
    )
    create.add_argument(
        "--rate-per-minute",
        type=_limit,
        metavar="N",
        help="submits a minute (default ADVISOR_KEY_RATE_PER_MINUTE)",
    )
    create.add_argument(
        "--max-in-flight",
        type=_limit,
        metavar="N",
        help="jobs queued or running at once (default ADVISOR_KEY_MAX_IN_FLIGHT)",
    )
    create.add_argument("--json", action="store_true", help="the key and its facts as JSON")
    create.set_defaults(handler=cmd_create)  # fmt: skip
    list_ = k_sub.add_parser("list", help="every key, revoked ones included (never the key)")
    list_.add_argument("--json", action="store_true")
    list_.set_defaults(handler=cmd_list)
    revoke = k_sub.add_parser("revoke", help="refuse a key from now on")
    revoke.add_argument("name")
    revoke.add_argument("--json", action="store_true")
    revoke.set_defaults(handler=cmd_revoke)
