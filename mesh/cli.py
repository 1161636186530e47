"""`meshctl`: the mesh's command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from mesh import contracts


def _proto_gen(args: argparse.Namespace) -> int:
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


def _proto_vendor(args: argparse.Namespace) -> int:
    ws = contracts.Workspace.find()
    for path in contracts.vendor(ws):
        print(f"vendored {path.relative_to(ws.root)}")
    return 0


def _proto_lint(args: argparse.Namespace) -> int:
    contracts.lint(contracts.Workspace.find())
    print("buf lint: clean")
    return 0


def _proto_breaking(args: argparse.Namespace) -> int:
    result = contracts.breaking(contracts.Workspace.find(), against=args.against)
    print(f"buf breaking: {result.message}")
    return 0


def _up(args: argparse.Namespace) -> int:
    ws = contracts.Workspace.find()
    services = (
        sorted(p.name for p in (ws.root / "services").glob("*/__main__.py") if p.parent.is_dir())
        if (ws.root / "services").is_dir()
        else []
    )
    generated = ws.root / contracts.PYTHON_OUT / contracts.OWN_PROTO_PACKAGE
    print(f"contracts: generated Python package at {generated.relative_to(ws.root)}/")
    print(f"contracts: descriptor set at {contracts.DESCRIPTOR_SET}")
    if not services:
        print("services: none defined yet under services/; nothing was started.")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="meshctl", description="Run and inspect the shop's service mesh."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    proto = commands.add_parser("proto", help="contracts: generate, lint, guard, vendor")
    proto_commands = proto.add_subparsers(dest="proto_command", required=True, metavar="STEP")
    steps: dict[str, tuple[str, Callable[[argparse.Namespace], int]]] = {
        "gen": ("generate the Python package and descriptor set from protos/", _proto_gen),
        "lint": ("buf lint the contracts", _proto_lint),
        "breaking": ("refuse breaking changes against the previous commit", _proto_breaking),
        "vendor": ("copy third-party protos from googleapis-common-protos", _proto_vendor),
    }
    for name, (help_text, handler) in steps.items():
        step = proto_commands.add_parser(name, help=help_text)
        step.set_defaults(handler=handler)
        if name == "breaking":
            step.add_argument(
                "--against",
                help="a buf input to compare with (default: the previous commit)",
            )

    up = commands.add_parser("up", help="start the mesh and say where to reach it")
    up.set_defaults(handler=_up)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        code: int = args.handler(args)
    except contracts.ContractsError as error:
        print(f"meshctl: {error}", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
