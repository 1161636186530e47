"""`meshctl proto gen | lint | breaking | release | vendor`: the contracts under protos/."""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from mesh.cli.command import Command
from mesh.control import binaries, contracts


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
    against = contracts.breaking(contracts.Workspace.find(), against=args.against)
    print(f"buf breaking: no breaking changes against {against}")
    return 0


def _release(args: argparse.Namespace) -> int:
    released = contracts.release(contracts.Workspace.find())
    print(f"released the contracts to {released.image} (sha256 {released.sha256})")
    print(_describe(released.changes))
    return 0


def _describe(changes: contracts.Changes | None) -> str:
    if changes is None:
        return "the first release: every definition is new"
    listed = [
        *(f"  added    {name}" for name in changes.added),
        *(f"  changed  {name}" for name in changes.changed),
        *(f"  removed  {name}" for name in changes.removed),
    ]
    if not listed:
        return "no definition changed since the previous release"
    return "since the previous release:\n" + "\n".join(listed)


def _add_arguments(command: argparse.ArgumentParser) -> None:
    steps = command.add_subparsers(dest="proto_command", required=True, metavar="STEP")
    gen = steps.add_parser(
        "gen", help="generate the Python package and descriptor set from protos/"
    )
    gen.set_defaults(step=_gen)
    steps.add_parser("lint", help="buf lint the contracts").set_defaults(step=_lint)
    breaking = steps.add_parser(
        "breaking",
        help="refuse breaking changes against the released contracts",
        description=(
            "Compare the working tree's protos with the released contracts"
            f" ({contracts.RELEASED_IMAGE}) by buf's FILE rules (buf.yaml), so a break is"
            " refused however many commits follow it. `meshctl proto release` moves the"
            " released contracts forward."
        ),
    )
    breaking.add_argument(
        "--against",
        metavar="INPUT",
        help=(
            "a buf input to compare with instead: a directory, an image, or a git ref such"
            f" as '.git#branch=main' (default: {contracts.RELEASED_IMAGE})"
        ),
    )
    breaking.set_defaults(step=_breaking)
    release = steps.add_parser(
        "release",
        help="record the current protos as the released contracts",
        description=(
            f"Build a buf image of the working tree's protos into {contracts.RELEASED_IMAGE},"
            " the contracts `meshctl proto breaking` guards, and print the definitions added,"
            " changed and removed since the previous release. Run it when the contracts"
            " ship, and commit the image; a breaking change it records is released on"
            " purpose."
        ),
    )
    release.set_defaults(step=_release)
    vendor = steps.add_parser(
        "vendor", help="copy third-party protos from googleapis-common-protos"
    )
    vendor.set_defaults(step=_vendor)


def _run(args: argparse.Namespace) -> int:
    step: Callable[[argparse.Namespace], int] = args.step
    return step(args)


PROTO = Command(
    _add_arguments, _run, errors=(contracts.ContractsError, binaries.BinaryNotFoundError)
)
