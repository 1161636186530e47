"""`meshctl`: the mesh's command line."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from mesh import contracts
from mesh.local import LocalMesh


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
    generated = ws.root / contracts.PYTHON_OUT / contracts.OWN_PROTO_PACKAGE
    print(
        f"contracts: Python package {generated.relative_to(ws.root)}/, "
        f"descriptor set {contracts.DESCRIPTOR_SET}"
    )
    try:
        mesh = LocalMesh(ws.root, args.run_dir.resolve(), args.services or None)
    except ValueError as error:
        print(f"meshctl up: {error}", file=sys.stderr)
        return 2
    if not mesh.services:
        print("services: none defined under services/; nothing was started.")
        return 0
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    mesh.start()
    try:
        asyncio.run(mesh.wait_ready())
        print(f"started {len(mesh.services)} services (run directory {mesh.run_dir}):")
        for service in mesh.services:
            pid = service.process.pid if service.process else "-"
            print(
                f"  {service.name:<14} grpc://{service.address:<21} pid {pid:<8} "
                f"log {service.log_path}"
            )
        example = mesh.services[0]
        print(f"try: .venv/bin/grpcurl -plaintext {example.address} list")
        print("ready; Ctrl-C stops every service", flush=True)
        while not stop.wait(1.0):
            exited = [s for s in mesh.services if s.process and s.process.poll() is not None]
            if exited:
                for service in exited:
                    print(
                        f"{service.name} exited with {service.process.returncode}; "  # type: ignore[union-attr]
                        f"see {service.log_path}",
                        file=sys.stderr,
                    )
                return 1
        return 0
    except (RuntimeError, TimeoutError) as error:
        print(f"meshctl up: {error}", file=sys.stderr)
        return 1
    finally:
        mesh.stop()
        print("stopped every service", flush=True)


def _token(argv: Sequence[str]) -> int:
    # The identity service owns its signing key; the command borrows its code to mint.
    from services.identity import token_cli

    return token_cli.main(argv)


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
    up.add_argument("services", nargs="*", help="only these services (default: every one)")
    up.add_argument("--run-dir", type=Path, default=Path("run"), help="state, logs, databases")
    up.set_defaults(handler=_up)

    token = commands.add_parser(
        "token",
        help="mint a development JWT signed by identity's key (see `meshctl token --help`)",
        add_help=False,
    )
    token.add_argument("token_args", nargs=argparse.REMAINDER)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["token"]:  # its own parser takes every argument after the word
        return _token(argv[1:])
    args = _parser().parse_args(argv)
    try:
        code: int = args.handler(args)
    except contracts.ContractsError as error:
        print(f"meshctl: {error}", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
