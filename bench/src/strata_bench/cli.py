"""``strata-bench``: the benchmark command line.

Adding a subcommand = one function + one registration line: write
``def add_<name>(sub: Subparsers) -> None`` (in your own module) that calls
``sub.add_parser(...)``, declares its arguments and ``set_defaults(func=handler)`` where
``handler(args) -> int`` returns the exit code; then append it to :data:`COMMANDS`.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from strata_bench.analysis import (
    RECORDS_FILE,
    RUN_FILE,
    SLO,
    SUMMARY_FILE,
    compare,
    markdown_summary,
    read_json,
    read_records,
    read_summary,
    summarize,
    write_json,
    write_records,
)
from strata_bench.client import (
    DEFAULT_ENGINE_HEADERS,
    EndpointConfig,
    LoadConfig,
    LoadRunner,
    load_plan,
    synthetic_plan,
    warmup_from,
)
from strata_bench.demo import add_demo
from strata_bench.model import PlannedRequest, RequestRecord
from strata_bench.peers import add_peers
from strata_bench.scenarios.cli import add_scenario

if TYPE_CHECKING:
    Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]
else:
    Subparsers = argparse._SubParsersAction

__all__ = ["COMMANDS", "Subparsers", "build_parser", "main"]

_PROGRESS_MIN_S = 5.0


def _header(text: str) -> tuple[str, str]:
    name, sep, value = text.partition(":")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"header must be NAME:VALUE, not {text!r}")
    return name.strip(), value.strip()


def add_run(sub: Subparsers) -> None:
    """``run``: send a plan (file or synthetic) to an endpoint; write a run directory."""
    p = sub.add_parser("run", help="send a plan to an endpoint and record every request")
    p.add_argument("--url", required=True, help="server root, e.g. http://127.0.0.1:8000")
    p.add_argument("--model", help="model name (default: first of /v1/models)")
    p.add_argument("--api", choices=("chat", "completions"), default="chat")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--plan", type=Path, help="plan file: JSONL of PlannedRequest objects")
    src.add_argument("--synthetic", type=int, metavar="N", help="N random-word single-turn requests")
    p.add_argument("--rate", type=float, help="synthetic arrivals per second (open loop)")
    p.add_argument("--arrival", choices=("poisson", "constant"), default="poisson")
    p.add_argument("--prompt-words", type=int, default=128)
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--time-scale", type=float, default=1.0, help="multiply every plan at_s by this")
    p.add_argument("--mode", choices=("open", "closed"), default="open")
    p.add_argument("--concurrency", type=int, default=1, help="closed-loop workers")
    p.add_argument("--max-sessions", type=int, help="open-loop cap on concurrent sessions")
    p.add_argument("--max-requests", type=int)
    p.add_argument("--duration", type=float, help="stop sending after S seconds")
    p.add_argument("--deadline", type=float, help="cancel everything in flight after S seconds")
    p.add_argument("--timeout", type=float, default=600.0, help="per-request timeout (s)")
    p.add_argument("--warmup", type=int, default=0, help="warm-up requests (copies of the first ones)")
    p.add_argument("--no-stream", action="store_true")
    p.add_argument("--no-usage", action="store_true", help="do not ask for stream usage")
    p.add_argument("--no-continuous-usage", action="store_true", help="usage only in the last chunk")
    p.add_argument("--no-ignore-eos", action="store_true")
    p.add_argument("--routing-strategy")
    p.add_argument("--header", type=_header, action="append", default=[], metavar="NAME:VALUE")
    p.add_argument("--engine-header", action="append", help="response header naming the engine (repeatable)")
    p.add_argument("--slo", default="", help='goodput objectives in ms, e.g. "ttft:200 tpot:50 e2e:2000"')
    p.add_argument("--out", type=Path, required=True, help="run directory to write")
    p.add_argument("--label", help="name of this run in comparisons (default: directory name)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--no-plots", action="store_true")
    p.set_defaults(func=_cmd_run)


def _cmd_run(args: argparse.Namespace) -> int:
    endpoint = EndpointConfig(
        args.url,
        model=args.model,
        api=args.api,
        stream=not args.no_stream,
        include_usage=not args.no_usage,
        continuous_usage=not args.no_continuous_usage,
        ignore_eos=not args.no_ignore_eos,
        routing_strategy=args.routing_strategy,
        headers=dict(args.header),
        timeout_s=args.timeout,
        engine_headers=tuple(args.engine_header or DEFAULT_ENGINE_HEADERS),
    )
    load = LoadConfig(
        mode=args.mode,
        concurrency=args.concurrency,
        max_concurrent_sessions=args.max_sessions,
        max_requests=args.max_requests,
        duration_s=args.duration,
        deadline_s=args.deadline,
    )
    if args.plan is not None:
        plan = load_plan(args.plan)
    else:
        plan = synthetic_plan(
            args.synthetic,
            rate=args.rate,
            arrival=args.arrival,
            prompt_words=args.prompt_words,
            max_tokens=args.max_tokens,
            seed=args.seed,
        )
    if args.time_scale != 1.0:
        plan = [_scaled(p, args.time_scale) for p in plan]
    slo = SLO.parse(args.slo)
    meta = {k: v for k, v in vars(args).items() if k != "func" and not isinstance(v, Path)}
    meta.update(plan=str(args.plan) if args.plan else None, out=str(args.out), argv=sys.argv[1:])
    records = asyncio.run(
        _drive(endpoint, load, plan, warmup=warmup_from(plan, args.warmup), meta=meta, progress=not args.no_progress)
    )
    summary = summarize(records, slo)
    write_records(args.out / RECORDS_FILE, records)
    write_json(args.out / SUMMARY_FILE, summary.to_dict())
    write_json(args.out / RUN_FILE, meta)
    if not args.no_plots:
        from strata_bench.analysis.plots import plot_run

        plot_run(records, args.out)
    print(markdown_summary(summary, title=str(args.label or args.out.name)))
    return 0 if summary.ok else 1


def _scaled(p: PlannedRequest, k: float) -> PlannedRequest:
    from dataclasses import replace

    return replace(p, at_s=p.at_s * k, think_time_s=p.think_time_s * k)


async def _drive(
    endpoint: EndpointConfig,
    load: LoadConfig,
    plan: list[PlannedRequest],
    *,
    warmup: list[PlannedRequest],
    meta: dict[str, Any],
    progress: bool,
) -> list[RequestRecord]:
    """Run with a SIGINT handler that stops gracefully (records kept) and, for long
    interactive runs, a Rich progress bar on stderr."""
    total = min(len(plan), load.max_requests or len(plan))
    long_run = max((p.at_s for p in plan), default=0.0) >= _PROGRESS_MIN_S or total >= 500
    bar: Any = None
    if progress and long_run and sys.stderr.isatty():
        from rich.progress import Progress

        bar = Progress(transient=True)
    task = bar.add_task("requests", total=total) if bar is not None else None
    runner = LoadRunner(endpoint, load, on_record=(lambda _r: bar.advance(task)) if bar is not None else None)
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGINT, runner.stop)
    try:
        if bar is not None:
            bar.start()
        result = await runner.run(plan, warmup)
    finally:
        loop.remove_signal_handler(signal.SIGINT)
        if bar is not None:
            bar.stop()
    meta.update(
        model=result.model,
        stopped_by=result.stopped_by,
        planned=result.planned,
        sent=result.sent,
        wall_start=result.wall_start,
        elapsed_s=result.elapsed_s,
        warmup_failed=result.warmup_failed,
    )
    return result.records


def add_analyze(sub: Subparsers) -> None:
    """``analyze``: recompute the summary (and plots) of a run directory."""
    p = sub.add_parser("analyze", help="summarise a run directory (records.jsonl)")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--slo", help="override the run's SLOs, e.g. 'ttft:200 tpot:50'")
    p.add_argument("--no-plots", action="store_true")
    p.set_defaults(func=_cmd_analyze)


def _cmd_analyze(args: argparse.Namespace) -> int:
    meta = read_json(args.run_dir / RUN_FILE)
    summary = summarize(
        read_records(args.run_dir), SLO.parse(args.slo if args.slo is not None else meta.get("slo", ""))
    )
    write_json(args.run_dir / SUMMARY_FILE, summary.to_dict())
    if not args.no_plots:
        from strata_bench.analysis.plots import plot_run

        plot_run(read_records(args.run_dir), args.run_dir)
    print(markdown_summary(summary, title=str(meta.get("label") or args.run_dir.name)))
    return 0


def add_compare(sub: Subparsers) -> None:
    """``compare``: several run directories side by side, ratios against the first."""
    p = sub.add_parser("compare", help="compare run directories (ratios vs the first)")
    p.add_argument("run_dirs", type=Path, nargs="+")
    p.add_argument("--plot", type=Path, help="also write TTFT/TPOT vs offered rate to this PNG")
    p.set_defaults(func=_cmd_compare)


def _cmd_compare(args: argparse.Namespace) -> int:
    print(compare(args.run_dirs))
    if args.plot is not None:
        from strata_bench.analysis.plots import plot_vs_qps

        labels = [str(read_json(d / RUN_FILE).get("label") or d.name) for d in args.run_dirs]
        plot_vs_qps([read_summary(d) for d in args.run_dirs], labels, args.plot)
    return 0


def add_selfcheck(sub: Subparsers) -> None:
    """``selfcheck``: the client's timing error against a mock with known delays."""
    p = sub.add_parser("selfcheck", help="measure the client's own overhead against a loopback mock")
    p.add_argument("--requests", type=int, default=100)
    p.add_argument("--rate", type=float, default=20.0)
    p.add_argument("--first-token-ms", type=float, default=20.0)
    p.add_argument("--per-token-ms", type=float, default=5.0)
    p.add_argument("--tokens-per-chunk", type=int, default=1)
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--in-process", action="store_true", help="mock in this process (default: a subprocess)")
    p.add_argument("--no-pin", action="store_true", help="do not pin client and mock to separate CPUs")
    p.add_argument("--serve", action="store_true", help="only run the mock server (prints its URL)")
    p.add_argument("--port", type=int, default=0)
    p.set_defaults(func=_cmd_selfcheck)


def _cmd_selfcheck(args: argparse.Namespace) -> int:
    from strata_bench.selfcheck import MockConfig, selfcheck, serve_forever

    if args.serve:
        cfg = MockConfig(args.first_token_ms / 1000, args.per_token_ms / 1000, args.tokens_per_chunk)
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        asyncio.run(serve_forever(cfg, port=args.port))
        return 0
    started = time.perf_counter()
    result = asyncio.run(
        selfcheck(
            requests=args.requests,
            rate=args.rate,
            first_token_ms=args.first_token_ms,
            per_token_ms=args.per_token_ms,
            max_tokens=args.max_tokens,
            in_process=args.in_process,
            pin=not args.no_pin,
        )
    )
    where = "in-process" if args.in_process else "subprocess"
    print(f"client self-check: {where} mock, {args.requests} requests, Poisson {args.rate} req/s, ", end="")
    print(f"{args.max_tokens} tokens each ({time.perf_counter() - started:.1f} s)\n")
    print(result.table())
    return 0 if result.failed == 0 else 1


COMMANDS: list[Callable[[Subparsers], None]] = [
    add_run,
    add_analyze,
    add_compare,
    add_selfcheck,
    add_scenario,
    add_demo,
    add_peers,
]
"""Subcommand registrations, in help order (one line per subcommand)."""


def build_parser() -> argparse.ArgumentParser:
    """The full parser with every registered subcommand."""
    parser = argparse.ArgumentParser(prog="strata-bench", description=__doc__.splitlines()[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for register in COMMANDS:
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``strata-bench``; returns the exit code."""
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
