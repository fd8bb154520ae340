"""``strata-bench scenario``: run a named (or file) scenario end to end."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from strata_bench.fleet import FleetError
from strata_bench.scenarios.loader import ScenarioError, load_scenario, quick_variant, scenario_names
from strata_bench.scenarios.runner import ScenarioOptions, run_scenario

if TYPE_CHECKING:
    from strata_bench.cli import Subparsers

__all__ = ["add_scenario"]


def add_scenario(sub: Subparsers) -> None:
    """Register ``scenario`` (one line in :data:`strata_bench.cli.COMMANDS`)."""
    p = sub.add_parser("scenario", help="run a versioned YAML scenario end to end (fleet, sweep, report)")
    p.add_argument("name", nargs="?", help=f"shipped name ({', '.join(scenario_names())}) or a YAML path")
    p.add_argument("--list", action="store_true", help="list the shipped scenarios and exit")
    p.add_argument("--check", action="store_true", help="validate the scenario and exit")
    p.add_argument("--quick", action="store_true", help="smoke run: few QPS points, a few seconds each")
    p.add_argument("--out", type=Path, default=Path(".strata/bench"), help="parent of the result directory")
    p.add_argument("--gateway-url", help="Strata gateway for `kind: gateway` strategies")
    p.add_argument("--api-key", help="bearer token for the gateway")
    p.add_argument("--engine", action="append", default=[], metavar="URL", help="existing engine (repeatable)")
    p.add_argument("--time-scale", type=float, help="time scale of the existing engines (default: the scenario's)")
    p.add_argument("--no-plots", action="store_true", help="no per-point PNGs (the sweep PNG is always written)")
    p.set_defaults(func=_cmd_scenario)


def _cmd_scenario(args: argparse.Namespace) -> int:
    if args.list:
        for name in scenario_names():
            print(f"{name:<20} {load_scenario(name).scenario.description.strip().splitlines()[0]}")
        return 0
    if not args.name:
        print("strata-bench scenario: give a scenario name or path (or --list)", file=sys.stderr)
        return 2
    try:
        loaded = load_scenario(args.name)
    except ScenarioError as exc:
        print(f"strata-bench scenario: {exc}", file=sys.stderr)
        return 2
    if args.check:
        print(f"{loaded.path}: valid (sha256 {loaded.sha256[:12]})")
        return 0
    if args.quick:
        loaded = quick_variant(loaded)
    options = ScenarioOptions(
        out_dir=args.out,
        gateway_url=args.gateway_url,
        engine_urls=tuple(args.engine),
        time_scale=args.time_scale,
        api_key=args.api_key,
        plots=not args.no_plots,
    )
    try:
        result = run_scenario(loaded, options)
    except FleetError as exc:
        print(f"strata-bench scenario: fleet failed: {exc}", file=sys.stderr)
        return 1
    print()
    print(result.table)
    print(f"\nreport: {result.out_dir / 'summary.md'}")
    if result.png is not None:
        print(f"plot:   {result.png}")
    bad = not result.rows or any(r.summary.ok == 0 for r in result.rows)
    return 130 if result.interrupted else (1 if bad else 0)
