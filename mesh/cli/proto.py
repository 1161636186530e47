"""`meshctl proto gen | lint | breaking | vendor`: the contracts under protos/."""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from mesh.cli.command import Command
from mesh.control import contracts


def _gen(args: argparse.Namespace) -> int:
    ws = contracts.Workspace.find()
    stale = contracts.stale_vendored(ws)
    if stale:
        print(
            "vendored protos differ from googleapis-common-protos: "
            + ", ".join(stale)
            + " (run `meshctl proto vendor`)",
            file=sys.stderr,
        )
        return 1
    descriptor_set, package = contracts.generate(ws)
    print(f"generated {package.relative_to(ws.root)}/ and {descriptor_set.relative_to(ws.root)}")
    return 0


def _vendor(args: argparse.Namespace) -> int:
    ws = contracts.Workspace.find()
    for path in contracts.vendor(ws):
        print(f"vendored {path.relative_to(ws.root)}")
    return 0


def _lint(args: argparse.Namespace) -> int:
    # Imported here: it needs the generated code, which `proto gen` makes on a fresh checkout.
    from mesh.runtime import validation

    ws = contracts.Workspace.find()
    contracts.lint(ws)
    print("buf lint: clean")
    with tempfile.TemporaryDirectory() as scratch:
        files = contracts.load_descriptor_set(
            contracts.build_descriptor_set(ws, Path(scratch) / "lint.binpb")
        )
    unbounded = validation.unbounded_fields(files)
    if unbounded:
        print(
            "fields without (shop.options.v1.limits), which a request could fill without"
            " bound:\n  " + "\n  ".join(unbounded),
            file=sys.stderr,
        )
        return 1
    print("limits: every string, bytes, list and map field of the shop's messages is bounded")
    return 0


def _breaking(args: argparse.Namespace) -> int:
    result = contracts.breaking(contracts.Workspace.find(), against=args.against)
    print(f"buf breaking: {result.message}")
    return 0


def _add_arguments(command: argparse.ArgumentParser) -> None:
    steps = command.add_subparsers(dest="proto_command", required=True, metavar="STEP")
    gen = steps.add_parser(
        "gen", help="generate the Python package and descriptor set from protos/"
    )
    gen.set_defaults(step=_gen)
    steps.add_parser("lint", help="buf lint the contracts").set_defaults(step=_lint)
    breaking = steps.add_parser(
        "breaking", help="refuse breaking changes against the previous commit"
    )
    breaking.add_argument(
        "--against", help="a buf input to compare with (default: the previous commit)"
    )
    breaking.set_defaults(step=_breaking)
    vendor = steps.add_parser(
        "vendor", help="copy third-party protos from googleapis-common-protos"
    )
    vendor.set_defaults(step=_vendor)


def _run(args: argparse.Namespace) -> int:
    step: Callable[[argparse.Namespace], int] = args.step
    return step(args)


PROTO = Command(_add_arguments, _run, errors=(contracts.ContractsError,))
