"""`advisor rollout show | set | rollback | plan`: the per-advisor split, audited."""

from __future__ import annotations

import argparse

from jobs.advisors import get_persona
from jobs.errors import InvalidWeights
from producers.commands import plans
from producers.commands.output import Subparsers, emit_json, services
from producers.errors import InvalidSubmission
from producers.ops.rollout import RolloutControl, default_actor
from producers.services import Services
from producers.views import registry_to_dict, weights_to_dict

EXPECTED_HELP = "only if the weights are still at version N (as `rollout show` printed)"


def rollout_control(built: Services) -> RolloutControl:
    """Rollout control over the database, registry, router and broker of `built`."""
    return RolloutControl(
        built.registry, built.rollouts, built.repository, built.router, built.outbox,
        live_window=built.settings.worker_live_window,
    )  # fmt: skip


def parse_weights(pairs: list[str]) -> dict[str, float]:
    weights: dict[str, float] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        bad = InvalidSubmission(f"Weight {pair!r}: expected VARIANT=NUMBER, e.g. base=0.9")
        if not sep or not name.strip():
            raise bad
        try:
            weights[name.strip()] = float(value)
        except ValueError:
            raise bad from None
    return weights


def _format(weights: dict[str, float], shadow: float = 0.0) -> str:
    text = " ".join(f"{name}={weight:.3g}" for name, weight in sorted(weights.items()))
    return text + (f" shadow={shadow:.3g}" if shadow else "")


def cmd_show(args: argparse.Namespace) -> int:
    with services() as built:
        rows = rollout_control(built).show()
        registry = built.registry
    if args.json:
        advisors = [
            weights_to_dict(r.weights) | {"variants": r.variants, "live": r.live_variants}
            for r in rows
        ]
        emit_json({"registry": registry_to_dict(registry), "advisors": advisors})
        return 0
    print(f"Variants from {registry.describe()}")
    for r in rows:
        w = r.weights
        print(f"{w.advisor:<12} v{w.version:<3} {_format(w.weights, w.shadow):<32} "
              f"serving={','.join(r.variants)} live={','.join(r.live_variants) or '-'} "
              f"by {w.updated_by}: {w.reason}")  # fmt: skip
    return 0


def cmd_set(args: argparse.Namespace) -> int:
    weights = parse_weights(args.weights)
    with services() as built:
        get_persona(args.advisor)
        known = {v.name for v in built.registry.variants_for(args.advisor)}
        unknown = sorted(set(weights) - known)
        if unknown:
            # The store would refuse too; this says which registry the known ones came from.
            raise InvalidWeights(
                f"Unknown variant(s) {unknown} for {args.advisor}; known: {sorted(known)} "
                f"({built.registry.where})"
            )
        actor = default_actor()
        result = rollout_control(built).set_weights(
            args.advisor, weights, reason=args.reason, actor=actor, shadow=args.shadow,
            expected_version=args.expected_version,
        )  # fmt: skip
        paused = plans.plan_control(built).on_manual_change(result, actor)
    if args.json:
        emit_json(weights_to_dict(result) | {"paused_plan": paused is not None})
        return 0
    print(f"{result.advisor} v{result.version}: {_format(result.weights, result.shadow)}")
    if paused is not None:
        print(f"Paused the rollout plan of {result.advisor} at {paused.percent:g}%; "
              f"`advisor rollout plan resume {result.advisor}` continues it")  # fmt: skip
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    with services() as built:
        actor = default_actor()
        result = rollout_control(built).rollback(
            args.advisor, drain=args.drain, reason=args.reason, actor=actor,
            expected_version=args.expected_version,
        )  # fmt: skip
        ended = plans.plan_control(built).on_manual_change(result.weights, actor)
    w = result.weights
    if args.json:
        emit_json(weights_to_dict(w) | {
            "ended_plan": ended is not None, "drained": len(result.drained),
            "republished": result.republished,
        })  # fmt: skip
        return 0
    print(f"{w.advisor} v{w.version}: {_format(w.weights)}")
    if ended is not None:
        print(f"The rollout plan of {w.advisor} ended: {ended.state}")
    if args.drain:
        print(f"Drained {len(result.drained)} queued job(s) to base; "
              f"{result.republished} republished")  # fmt: skip
    return 0


def register(sub: Subparsers) -> None:
    p = sub.add_parser("rollout", help="per-advisor traffic split")
    r_sub = p.add_subparsers(dest="rollout_command", required=True, metavar="ACTION")
    show = r_sub.add_parser("show", help="current weights of every advisor")
    show.add_argument("--json", action="store_true")
    show.set_defaults(handler=cmd_show)
    set_ = r_sub.add_parser("set", help="set an advisor's weights")
    set_.add_argument("advisor")
    set_.add_argument("weights", nargs="+", metavar="VARIANT=WEIGHT")
    set_.add_argument("--reason", required=True)
    set_.add_argument(
        "--shadow", type=float, metavar="F",
        help="share of split jobs also run on the other arm, paired (0-1; default: keep)",
    )  # fmt: skip
    set_.add_argument("--expected-version", type=int, metavar="N", help=EXPECTED_HELP)
    set_.add_argument("--json", action="store_true")
    set_.set_defaults(handler=cmd_set)
    back = r_sub.add_parser("rollback", help="send all of an advisor's traffic to base")
    back.add_argument("advisor")
    back.add_argument("--drain", action="store_true", help="also move queued jobs to base")
    back.add_argument("--reason", required=True)
    back.add_argument("--expected-version", type=int, metavar="N", help=EXPECTED_HELP)
    back.add_argument("--json", action="store_true")
    back.set_defaults(handler=cmd_rollback)
    plans.register(r_sub)
