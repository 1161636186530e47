"""Running the shop's services as local processes on loopback (`meshctl up`).

Each service under `services/` that has a `__main__` runs as `python -m services.<name>`
on a free loopback port, with its log in `<run-dir>/logs/<name>.log`, its database in
`<run-dir>/<name>/`, and `SHOP_<DEP>_ADDRESS` set for every other service so it can reach
its dependencies. `up` returns once every service answers gRPC health SERVING; the
processes are stopped by pid (SIGTERM, then SIGKILL after the grace period).
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

#: How long a service may take to report SERVING.
START_TIMEOUT_SECONDS = 30.0
#: How long a stopping service may take before it is killed.
STOP_GRACE_SECONDS = 10.0


def discover_services(root: Path) -> list[str]:
    """The runnable services under `root/services`, in name order."""
    return sorted(p.parent.name for p in (root / "services").glob("*/__main__.py"))


def free_port() -> int:
    """A loopback port that was free a moment ago (the server refuses a taken one loudly)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class LocalService:
    """One service process."""

    name: str
    port: int
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = field(default=None, repr=False)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


class LocalMesh:
    """The services of one repository, started and stopped together."""

    def __init__(self, root: Path, run_dir: Path, names: list[str] | None = None) -> None:
        known = discover_services(root)
        unknown = sorted(set(names or ()) - set(known))
        if unknown:
            raise ValueError(f"no such service: {', '.join(unknown)} (known: {', '.join(known)})")
        self.root = root
        self.run_dir = run_dir
        self.services = [
            LocalService(name, free_port(), run_dir / "logs" / f"{name}.log")
            for name in (names or known)
        ]

    def environment(self) -> dict[str, str]:
        env = dict(os.environ, SHOP_RUN_DIR=str(self.run_dir), PYTHONUNBUFFERED="1")
        for service in self.services:
            env[f"SHOP_{service.name.upper()}_ADDRESS"] = service.address
        return env

    def start(self) -> None:
        """Start every service process (it returns before they are ready; see `wait_ready`)."""
        env = self.environment()
        for service in self.services:
            service.log_path.parent.mkdir(parents=True, exist_ok=True)
            service._log = service.log_path.open("ab")
            service.process = subprocess.Popen(
                [sys.executable, "-m", f"services.{service.name}", "--port", str(service.port)],
                cwd=self.root,
                env=env,
                stdout=service._log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    async def wait_ready(self, within: float = START_TIMEOUT_SECONDS) -> None:
        """Wait until every service reports SERVING; raise naming the ones that did not."""
        deadline = time.monotonic() + within
        pending = list(self.services)
        while pending:
            for service in list(pending):
                if service.process is not None and service.process.poll() is not None:
                    raise RuntimeError(
                        f"{service.name} exited with {service.process.returncode}; "
                        f"see {service.log_path}"
                    )
                if await _serving(service.address):
                    pending.remove(service)
            if pending and time.monotonic() > deadline:
                names = ", ".join(s.name for s in pending)
                raise TimeoutError(f"not SERVING after {within:.0f}s: {names}")
            if pending:
                await asyncio.sleep(0.2)

    def stop(self, grace: float = STOP_GRACE_SECONDS) -> None:
        """SIGTERM every process by pid, SIGKILL what is still running after `grace`."""
        running = [s for s in self.services if s.process is not None and s.process.poll() is None]
        for service in running:
            assert service.process is not None
            service.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for service in running:
            assert service.process is not None
            try:
                service.process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                service.process.kill()
                service.process.wait()
        for service in self.services:
            if service._log is not None:
                service._log.close()
                service._log = None


async def _serving(address: str) -> bool:
    async with grpc.aio.insecure_channel(address) as channel:
        stub: Any = health_pb2_grpc.HealthStub(channel)
        try:
            response = await stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
        except grpc.aio.AioRpcError:
            return False
        return bool(response.status == health_pb2.HealthCheckResponse.SERVING)
