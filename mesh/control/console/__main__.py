"""`python -m mesh.control.console`: serve the console of the mesh running from a run
directory (started by the supervisor)."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

from aiohttp import web

from mesh.control.console.access import read_token
from mesh.control.console.context import Console
from mesh.control.console.graph import EDGE, service_map
from mesh.control.console.live import Live
from mesh.control.console.measure import Replicas
from mesh.control.console.server import make_app
from mesh.control.plan import MeshPlan
from mesh.control.topology import load


def console_of(run_dir: Path, config: Path, port: int) -> Console:
    plan = MeshPlan.load(run_dir)
    graph = service_map(load(config), plan)
    services = {
        service: Replicas(
            tuple(i.metrics_port for i in plan.of(service)),
            tuple(i.admin_socket for i in plan.of(service)),
        )
        for service in dict.fromkeys(i.service for i in plan.instances)
    }
    if plan.edge is not None:  # what its rate limits turn away
        services[EDGE] = Replicas((), (plan.edge.admin_socket,))
    return Console(
        graph=graph,
        live=Live(graph, run_dir, services),
        run_dir=run_dir,
        token=read_token(run_dir),
        port=port,
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m mesh.control.console")
    parser.add_argument("--port", type=int, required=True, help="the loopback port to serve")
    parser.add_argument("--run-dir", type=Path, required=True, help="the mesh's run directory")
    parser.add_argument("--config", type=Path, required=True, help="the mesh's mesh.yaml")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s console %(message)s")
    console = console_of(args.run_dir, args.config, args.port)
    web.run_app(make_app(console), host="127.0.0.1", port=args.port, print=None)


if __name__ == "__main__":
    main()
