"""Health probes: does a port take connections, is a gRPC server SERVING, does an HTTP
endpoint answer 200.

The supervisor waits on them locally; in containers they are the health checks
(`python -m mesh.control.probe grpc 127.0.0.1:50051`, `python -m mesh.control.probe http
URL`), exiting
0 when healthy and 1 otherwise, with the reason on stderr.
"""

from __future__ import annotations

import argparse
import socket
import sys
import urllib.request
from collections.abc import Sequence
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def port_open(port: int, timeout: float = 1.0) -> bool:
    """Whether something on loopback `port` accepts a TCP connection.

    A process that is still starting has not bound its port yet: this tells so in tens
    of microseconds, without a client library's connection attempt (and its logged
    error) for each probe."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout):
            return True
    except OSError:
        return False


def grpc_serving(address: str, timeout: float = 1.0) -> bool:
    """Whether the gRPC server at `address` (host:port) reports SERVING."""
    with grpc.insecure_channel(address) as channel:
        stub: Any = health_pb2_grpc.HealthStub(channel)
        try:
            response = stub.Check(health_pb2.HealthCheckRequest(), timeout=timeout)
        except grpc.RpcError:
            return False
    return bool(response.status == health_pb2.HealthCheckResponse.SERVING)


def app_serving(port: int, timeout: float = 1.0) -> bool:
    """Whether the gRPC server on loopback `port` reports SERVING. A port that takes no
    connection is answered at once: a gRPC channel costs 0.65 ms of CPU to find that out,
    the socket 0.04 ms (on the 2-CPU machine of docs/benchmarks.md), and a starting mesh is
    probed 20 times a second."""
    return port_open(port, timeout) and grpc_serving(f"127.0.0.1:{port}", timeout)


def http_ok(url: str, timeout: float = 1.0) -> bool:
    """Whether `url` answers 200."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mesh.control.probe", description=__doc__)
    parser.add_argument("kind", choices=["grpc", "http"])
    parser.add_argument("target", help="host:port of a gRPC server, or an http:// URL")
    parser.add_argument("--timeout", type=float, default=2.0, help="seconds")
    args = parser.parse_args(argv)
    check = grpc_serving if args.kind == "grpc" else http_ok
    if check(args.target, args.timeout):
        return 0
    print(f"{args.target}: not healthy", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
