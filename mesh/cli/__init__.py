"""`meshctl`: the mesh's command line."""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from mesh.control import contracts
from mesh.control.plan import DEFAULT_RUN_DIR

DEFAULT_TRIAL_DIR = DEFAULT_RUN_DIR / "trial"


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
    from mesh.runtime import validation  # needs the code `meshctl proto gen` makes

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


def _proto_breaking(args: argparse.Namespace) -> int:
    result = contracts.breaking(contracts.Workspace.find(), against=args.against)
    print(f"buf breaking: {result.message}")
    return 0


def _root() -> Path:
    return contracts.Workspace.find().root


def _run_dir(args: argparse.Namespace) -> Path:
    run_dir: Path = args.run_dir
    return run_dir if run_dir.is_absolute() else _root() / run_dir


def _up(args: argparse.Namespace) -> int:
    from mesh.control import local

    if args.detach:
        return local.up_detached(_root(), _run_dir(args), args.config, args.edge_port)
    return local.supervise(
        _root(), _run_dir(args), args.config, foreground=True, edge_port=args.edge_port
    )


def _supervise(args: argparse.Namespace) -> int:
    from mesh.control import local

    return local.supervise(
        _root(), _run_dir(args), args.config, foreground=False, edge_port=args.edge_port
    )


def _down(args: argparse.Namespace) -> int:
    from mesh.control import local

    return local.down(_run_dir(args))


def _status(args: argparse.Namespace) -> int:
    from mesh.cli import control  # needs the code `meshctl proto gen` makes

    return control.status(_run_dir(args), args.json)


def _logs(args: argparse.Namespace) -> int:
    from mesh.cli import control  # needs the code `meshctl proto gen` makes

    return control.logs(_run_dir(args), args.service, args.lines, args.trace, args.json)


def _trace(args: argparse.Namespace) -> int:
    from mesh.cli import control  # needs the code `meshctl proto gen` makes

    return control.show_trace(_run_dir(args), args.id)


def _traces(args: argparse.Namespace) -> int:
    from mesh.cli import control  # needs the code `meshctl proto gen` makes

    return control.slow_traces(_run_dir(args), args.limit)


def _certs(args: argparse.Namespace) -> int:
    from mesh.cli import control  # needs the code `meshctl proto gen` makes
    from mesh.control import local
    from mesh.control.pki import MeshPKI
    from mesh.deploy import commands as deploy  # needs the code `meshctl proto gen` makes

    root, run_dir = _root(), _run_dir(args)
    if args.verify or args.every:
        topology = local.load_topology(root, args.config)
        pki = MeshPKI(run_dir / "pki", topology.trust_domain, topology.namespace)
        if args.verify:
            return deploy.verify_certificates(topology, pki)
        return deploy.keep_certificates(topology, pki, args.every)
    return control.certs(root, run_dir, args.config, args.rotate, args.issue)


def _render(args: argparse.Namespace) -> int:
    from mesh.control import local
    from mesh.deploy import commands as deploy  # needs the code `meshctl proto gen` makes

    root = _root()
    topology = local.load_topology(root, args.config)
    if args.target == "edge-files":
        if args.directory is None:
            print("meshctl render edge-files: give the DIRECTORY to write", file=sys.stderr)
            return 2
        return deploy.write_edge_files(root, topology, args.directory)
    if args.target == "k8s-secrets":
        return deploy.print_secrets(topology, _run_dir(args))
    return deploy.render(root, topology, args.target, args.check)


def _events(args: argparse.Namespace) -> int:
    from mesh.control import local
    from mesh.deploy import commands as deploy  # needs the code `meshctl proto gen` makes

    return deploy.init_events(local.load_topology(_root(), args.config), args.replicas)


def _dlq(args: argparse.Namespace) -> int:
    from mesh.cli import control  # needs the code `meshctl proto gen` makes

    if args.action == "replay" and (args.sequence is None) == (not args.all):
        print("meshctl dlq replay: give one SEQUENCE or --all", file=sys.stderr)
        return 2
    if args.action == "show" and args.sequence is None:
        print("meshctl dlq show: give a SEQUENCE", file=sys.stderr)
        return 2
    return control.dlq(_run_dir(args), args.action, args.sequence, args.json)


def _bench(args: argparse.Namespace) -> int:
    from mesh.tools import bench, bench_saga  # needs the code `meshctl proto gen` makes

    output = args.output if args.output.is_absolute() else _root() / args.output
    if args.what == "saga":
        saga = bench_saga.SagaOptions(
            output=output,
            rate=args.rate or bench_saga.SagaOptions.rate,
            duration=args.duration,
            max_orders=args.requests,
            steps=args.steps,
            sampling=args.sampling,
            profile=args.profile,
        )
        return bench_saga.bench_saga(_root(), _run_dir(args), saga)
    options = bench.Options(
        output=output,
        duration=args.duration,
        requests=args.requests,
        concurrency=args.concurrency,
        rate=args.rate,
        sampling=args.sampling,
        warmup=args.warmup,
        paths=tuple(args.paths.split(",")) if args.paths else bench.PATHS,
        pin=not args.no_pin,
    )
    return bench.bench(_root(), _run_dir(args), options)


def _chaos(args: argparse.Namespace) -> int:
    from mesh.tools import chaos  # needs the code `meshctl proto gen` makes

    if args.scenario not in chaos.SCENARIOS:
        known = ", ".join(chaos.SCENARIOS)
        print(f"meshctl chaos: no scenario {args.scenario!r}; choose {known}", file=sys.stderr)
        return 2
    return chaos.run(_root(), _run_dir(args), args.scenario, short=args.short)


#: The identity service owns its signing key and mints with it: `meshctl token` runs its
#: command (the mesh never imports a service's code).
TOKEN_COMMAND = (sys.executable, "-m", "services.identity.token_cli")


def _token(argv: Sequence[str]) -> int:
    if not any(arg == "--run-dir" or arg.startswith("--run-dir=") for arg in argv):
        argv = [*argv, "--run-dir", str(_root() / DEFAULT_RUN_DIR)]
    return subprocess.run([*TOKEN_COMMAND, *argv], check=False).returncode


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


def trial_run_dir(command: argparse.ArgumentParser, whose: str) -> None:
    command.add_argument(
        "--run-dir", type=Path, default=DEFAULT_TRIAL_DIR,
        help=f"{whose} own mesh (default .mesh/trial; wiped each run)",
    )  # fmt: skip


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

    def mesh_command(
        name: str, help_text: str, handler: Callable[[argparse.Namespace], int]
    ) -> argparse.ArgumentParser:
        command = commands.add_parser(name, help=help_text)
        command.add_argument(
            "--run-dir", type=Path, default=DEFAULT_RUN_DIR,
            help="the mesh's state, certificates, logs and databases (default: .mesh)",
        )  # fmt: skip
        command.set_defaults(handler=handler)
        return command

    up = mesh_command("up", "start the mesh, wait until healthy, say where to reach it", _up)
    up.add_argument("--detach", action="store_true", help="return once healthy; `down` stops it")
    supervise = mesh_command("supervise", argparse.SUPPRESS, _supervise)
    for command in (up, supervise):
        command.add_argument("--config", type=Path, help="the topology (default: mesh.yaml)")
        command.add_argument(
            "--edge-port", type=int, help="the edge's port instead of mesh.yaml's (0: a free one)"
        )
    mesh_command("down", "stop a mesh started with `up --detach`", _down)
    status = mesh_command("status", "each instance's pids, ports and health", _status)
    status.add_argument("--json", action="store_true", help="machine-readable output")
    logs = mesh_command("logs", "a service's logs (every instance)", _logs)
    logs.add_argument("service")
    logs.add_argument("-n", "--lines", type=int, default=50, help="lines per instance")
    logs.add_argument("--trace", metavar="TRACE_ID", help="only the lines of this trace")
    logs.add_argument("--json", action="store_true", help="the JSON lines as stored")
    trace = mesh_command("trace", "one trace as a waterfall: an order's, or by trace id", _trace)
    trace.add_argument("id", help="an order id, or a trace id (32 hex digits)")
    traces = mesh_command("traces", "recent traces, the slowest first", _traces)
    traces.add_argument("--slow", action="store_true", help="rank by duration (the default)")
    traces.add_argument("-n", "--limit", type=int, default=10, help="how many traces")
    dead = mesh_command("dlq", "dead letters: list, show one, replay one or --all", _dlq)
    dead.add_argument("action", choices=["list", "show", "replay"])
    dead.add_argument("sequence", nargs="?", type=int, help="a dead letter's sequence number")
    dead.add_argument("--all", action="store_true", help="replay every dead letter")
    dead.add_argument("--json", action="store_true", help="machine-readable list")
    certs = mesh_command("certs", "the mesh CA and every certificate it issued", _certs)
    certs.add_argument("--rotate", action="store_true", help="re-issue every leaf now")
    certs.add_argument(
        "--issue", action="store_true",
        help="first issue what is missing or due: the CA, each instance, edge, nats, meshctl",
    )  # fmt: skip
    certs.add_argument(
        "--every", type=float, metavar="SECONDS",
        help="with --issue: keep running, renewing what falls due every SECONDS (containers)",
    )  # fmt: skip
    certs.add_argument(
        "--verify", action="store_true",
        help="exit 1, naming them, if certificates the mesh needs are missing or due",
    )  # fmt: skip
    certs.add_argument("--config", type=Path, help="the topology (default: mesh.yaml)")
    render = mesh_command(
        "render", "write deploy files from mesh.yaml: compose, k8s, edge-files, k8s-secrets",
        _render,
    )  # fmt: skip
    render.add_argument(
        "target", choices=["compose", "k8s", "edge-files", "k8s-secrets"],
        help="compose: docker-compose.yml, .env, deploy/compose/; k8s: deploy/k8s/; "
        "edge-files DIR: what the edge serves; k8s-secrets: the dev identities as Secrets "
        "(CA kept in RUN_DIR/k8s-pki) to pipe into `kubectl apply -f -`",
    )  # fmt: skip
    render.add_argument("directory", nargs="?", type=Path, help="for edge-files")
    render.add_argument(
        "--check", action="store_true", help="write nothing; fail if a committed file is stale"
    )
    render.add_argument("--config", type=Path, help="the topology (default: mesh.yaml)")
    events_command = commands.add_parser("events", help="the event bus: `events init`")
    events_command.add_argument("action", choices=["init"])
    events_command.add_argument(
        "--replicas", type=int, default=1, help="copies of each stream (3 in a NATS cluster)"
    )
    events_command.add_argument("--config", type=Path, help="the topology (default: mesh.yaml)")
    events_command.set_defaults(handler=_events)

    bench = commands.add_parser(
        "bench",
        help="measure what the mesh costs a request (five paths to one RPC, ratios to "
        "direct), or with `saga` how many orders per second the saga completes",
    )
    bench.add_argument(
        "what", nargs="?", choices=["paths", "saga"], default="paths",
        help="paths (default): the RPC along every path; saga: orders through the saga",
    )  # fmt: skip
    bench.add_argument(
        "--duration", type=_positive_float, default=10.0, help="seconds per run (default 10)"
    )
    bench.add_argument(
        "--requests", type=_positive_int, help="at most this many calls (saga: orders) per run"
    )
    bench.add_argument(
        "--concurrency",
        type=_positive_int,
        default=16,
        help="callers of the throughput runs (default 16)",
    )
    bench.add_argument(
        "--rate",
        type=_positive_float,
        help="calls/s of the open-loop runs (default: half the slowest path's throughput); "
        "saga: the first rate of orders/s (default 25)",
    )
    bench.add_argument(
        "--no-pin", action="store_true",
        help="let the load generator share every CPU with the mesh (default: the last CPU "
        "is the generator's alone)",
    )  # fmt: skip
    bench.add_argument(
        "--steps", type=_positive_int, default=4,
        help="saga: rates tried for the ceiling, doubling each time (default 4)",
    )  # fmt: skip
    bench.add_argument(
        "--profile", action="store_true",
        help="saga: record a py-spy flame graph of each app during the first step "
        "(<output>/flame-<service>.svg)",
    )  # fmt: skip
    bench.add_argument(
        "--sampling",
        type=float,
        default=1.0,
        help="percent of requests traced (default 1, as in production)",
    )
    bench.add_argument(
        "--warmup",
        type=_positive_float,
        default=1.0,
        help="seconds of calls before a path's runs (default 1)",
    )
    bench.add_argument(
        "--paths", help="a comma-separated subset of direct,sidecar,mesh,edge-grpc,edge-rest"
    )
    bench.add_argument(
        "--output",
        type=Path,
        default=Path(".mesh") / "bench",
        help="where bench.json and bench.png go (default .mesh/bench)",
    )
    trial_run_dir(bench, "the benchmark's")
    bench.set_defaults(handler=_bench)

    chaos = commands.add_parser(
        "chaos",
        help="break part of a mesh of its own on purpose; PASS or FAIL against a criterion",
    )
    chaos.add_argument(
        "scenario",
        help="kill-replica (catalog replicas killed under load), poison (poison events "
        "among good orders), crash-saga (saga participants and nats-server killed during "
        "a burst of orders), faults (payments' calls to the processor failed and delayed) "
        "or overload (a read and PlaceOrder at multiples of their capacity)",
    )
    chaos.add_argument(
        "--short", action="store_true", help="the short form (under a minute; the tests run it)"
    )
    trial_run_dir(chaos, "the scenario's")
    chaos.set_defaults(handler=_chaos)

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
    except Exception as error:
        known = tuple(
            getattr(module, name)
            for module, name in (
                (sys.modules.get("mesh.control.local"), "ControlError"),
                (sys.modules.get("mesh.deploy.commands"), "DeployError"),
            )
            if module is not None
        )
        if known and isinstance(error, known):
            print(f"meshctl: {error}", file=sys.stderr)
            return 1
        raise
    return code


if __name__ == "__main__":
    sys.exit(main())
