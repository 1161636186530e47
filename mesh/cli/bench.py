"""`meshctl bench [paths|saga]`: what the mesh costs a request, or the saga's ceiling."""

from __future__ import annotations

import argparse
from pathlib import Path

from mesh.cli.command import Command, add_trial_run_dir, root, run_dir
from mesh.control.contracts import ContractsError
from mesh.control.local import ControlError
from mesh.tools import bench, bench_saga


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError("must be a positive number")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _path_names(text: str) -> tuple[str, ...]:
    names = tuple(text.split(","))
    unknown = [name for name in names if name not in bench.PATHS]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"no path {', '.join(unknown)}; choose from {','.join(bench.PATHS)}"
        )
    return names


def _add_load_arguments(command: argparse.ArgumentParser) -> None:
    """How long, how many, how fast: the arguments of both benchmarks."""
    command.add_argument(
        "--duration", type=_positive_float, default=10.0, help="seconds per run (default 10)"
    )
    command.add_argument(
        "--requests", type=_positive_int, help="at most this many calls (saga: orders) per run"
    )
    command.add_argument(
        "--concurrency", type=_positive_int, default=16,
        help="callers of the throughput runs (default 16)",
    )  # fmt: skip
    command.add_argument(
        "--rate", type=_positive_float,
        help="calls/s of the open-loop runs (default: half the slowest path's throughput); "
        "saga: the first rate of orders/s (default 25)",
    )  # fmt: skip
    command.add_argument(
        "--no-pin", action="store_true",
        help="let the load generator share every CPU with the mesh (default: the last CPU "
        "is the generator's alone)",
    )  # fmt: skip


def _add_saga_arguments(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--steps", type=_positive_int, default=4,
        help="saga: rates tried for the ceiling, doubling each time (default 4)",
    )  # fmt: skip
    command.add_argument(
        "--profile", action="store_true",
        help="saga: record a py-spy flame graph of each app during the first step "
        "(<output>/flame-<service>.svg)",
    )  # fmt: skip


def _add_output_arguments(command: argparse.ArgumentParser) -> None:
    """What is traced and measured, and where the results go."""
    command.add_argument(
        "--sampling", type=float, default=1.0,
        help="percent of requests traced (default 1, as in production)",
    )  # fmt: skip
    command.add_argument(
        "--warmup", type=_positive_float, default=1.0,
        help="seconds of calls before a path's runs (default 1)",
    )  # fmt: skip
    command.add_argument(
        "--paths", type=_path_names, default=bench.PATHS,
        help=f"a comma-separated subset of {','.join(bench.PATHS)}",
    )  # fmt: skip
    command.add_argument(
        "--output", type=Path, default=Path(".mesh") / "bench",
        help="where bench.json and bench.png go (default .mesh/bench)",
    )  # fmt: skip


def _add_arguments(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "what", nargs="?", choices=["paths", "saga"], default="paths",
        help="paths (default): the RPC along every path; saga: orders through the saga",
    )  # fmt: skip
    _add_load_arguments(command)
    _add_saga_arguments(command)
    _add_output_arguments(command)
    add_trial_run_dir(command, "the benchmark's")


def _saga_options(args: argparse.Namespace, output: Path) -> bench_saga.SagaOptions:
    return bench_saga.SagaOptions(
        output=output,
        rate=args.rate or bench_saga.SagaOptions.rate,
        duration=args.duration,
        max_orders=args.requests,
        steps=args.steps,
        sampling=args.sampling,
        profile=args.profile,
    )


def _paths_options(args: argparse.Namespace, output: Path) -> bench.Options:
    return bench.Options(
        output=output,
        duration=args.duration,
        requests=args.requests,
        concurrency=args.concurrency,
        rate=args.rate,
        sampling=args.sampling,
        warmup=args.warmup,
        paths=args.paths,
        pin=not args.no_pin,
    )


def _run(args: argparse.Namespace) -> int:
    output = args.output if args.output.is_absolute() else root() / args.output
    if args.what == "saga":
        return bench_saga.bench_saga(root(), run_dir(args), _saga_options(args, output))
    return bench.bench(root(), run_dir(args), _paths_options(args, output))


BENCH = Command(_add_arguments, _run, errors=(ContractsError, ControlError))
