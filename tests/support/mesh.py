"""The running mesh the end-to-end tests share, and what they check it with: a client's
token and account, errors as the edge returns them, the events a stream holds."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from google.protobuf.message import DecodeError
from nats.js import JetStreamContext

from mesh.control import envoy, natsconf
from mesh.control.binaries import find_binary
from mesh.control.contracts import DESCRIPTOR_SET, Workspace
from mesh.control.process import pid_alive
from mesh.control.state import all_pids
from mesh.runtime import events
from mesh.runtime.service import sqlite_path
from shop.events.v1 import events_pb2

ROOT = Workspace.find(Path(__file__).parent).root
#: A small mesh's mesh.yaml: identity (tokens, its JWKS) and inventory behind the edge;
#: a test adds its own `edge:` entries below, indented by two spaces.
SMALL_MESH_YAML = """\
services:
  identity: {}
  inventory: {}
edge:
  expose: [identity, inventory]
  auth: {public: [identity.GetJwks, inventory.GetStock]}
"""
#: `meshctl up`'s options that put the edge's ports, plain and HTTPS, on free ones, so a
#: test's mesh runs beside any other.
FREE_EDGE_PORTS = ("--edge-port", "0", "--https-port", "0")


@dataclass
class RunningMesh:
    run_dir: Path
    config: Path
    environment: dict[str, str] = field(default_factory=dict)
    """Variables for `meshctl` (and so for every process of the mesh), on top of ours."""

    def meshctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [find_binary("meshctl"), *args, "--run-dir", str(self.run_dir)],
            capture_output=True, text=True, timeout=240, check=check, cwd=ROOT,
            env={**os.environ, **self.environment},
        )  # fmt: skip

    def state(self) -> dict[str, Any]:
        state: dict[str, Any] = json.loads(self.meshctl("status", "--json").stdout)
        return state

    def instance(self, name: str) -> dict[str, Any]:
        return next(i for i in self.state()["instances"] if i["instance"] == name)

    def pki(self, instance: str) -> tuple[Path, Path]:
        directory = self.run_dir / "pki" / instance
        return directory / "cert.pem", directory / "key.pem"

    def down(self) -> list[int]:
        """`meshctl down`, then kill by pid whatever outlived it; return those pids."""
        try:
            pids = all_pids(json.loads((self.run_dir / "state.json").read_text()))
        except FileNotFoundError:
            pids = []
        self.meshctl("down", check=False)
        survivors = [pid for pid in pids if pid_alive(pid)]
        for pid in survivors:
            os.kill(pid, signal.SIGKILL)
        return survivors

    @property
    def edge_url(self) -> str:
        url: str = self.state()["edge"]["url"]
        return url

    @property
    def https_address(self) -> str:
        """Where the edge speaks HTTPS: `127.0.0.1:PORT`."""
        url: str = self.state()["edge"]["https_url"]
        return url.removeprefix("https://")

    def token(self, subject: str, *scopes: str) -> str:
        """A token signed by this mesh's identity service (`meshctl token`)."""
        args = [arg for scope in scopes for arg in ("--scope", scope)]
        return self.meshctl("token", "--subject", subject, *args).stdout.strip()

    @contextlib.asynccontextmanager
    async def jetstream(self) -> AsyncIterator[JetStreamContext]:
        """JetStream as the mesh's administrator (`meshctl`'s identity) sees it."""
        client = await natsconf.admin_from_state(self.state()).connect()
        try:
            yield client.jetstream()
        finally:
            await client.close()

    def database(self, service: str) -> Path:
        """The SQLite file of `service` (to read what it stored, never to write)."""
        return sqlite_path(self.run_dir, service)

    @property
    def ca(self) -> Path:
        return self.run_dir / "pki" / "ca" / "ca.pem"

    def stats(self, instance: str) -> dict[str, int]:
        """The Envoy counters and gauges of `instance`'s sidecar (through its admin socket)."""
        return dict(envoy.admin_stats(self.instance(instance)["admin_socket"]))


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


#: What must never reach a client: the words of a Python exception or traceback.
LEAKS = ("Traceback", "Error parsing", "DecodeError", "Unexpected <class", "exception")


def leaks_nothing(text: str) -> None:
    """Assert `text` (an answer's message or body) holds no exception's words."""
    assert not [word for word in LEAKS if word.lower() in text.lower()], text


def assert_json_error(response: httpx.Response, status: int, code: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = response.json()
    assert body["code"] == code
    assert isinstance(body["message"], str)
    return body


def customer(edge: httpx.Client) -> tuple[str, str]:
    """A newly registered customer: (user id, access token from Login)."""
    email = f"{uuid.uuid4().hex[:12]}@example.org"
    user = edge.post("/v1/users", json={"email": email, "password": "correct horse"})
    assert user.status_code == 200, user.text
    login = edge.post("/v1/tokens", json={"email": email, "password": "correct horse"})
    assert login.status_code == 200, login.text
    return user.json()["user"]["id"], login.json()["accessToken"]


async def stream_events(js: JetStreamContext, subject: str) -> list[events_pb2.EventEnvelope]:
    """Every event the stream holds on `subject` now, oldest first (an ephemeral consumer);
    the poison other tests of the session publish on purpose (bytes that are no event) is
    left out."""
    subscription = await js.pull_subscribe(subject, stream=events.EVENTS_STREAM)
    found = []
    try:
        pending = (await subscription.consumer_info()).num_pending
        while pending:
            batch = await subscription.fetch(min(pending, 200), timeout=5)
            pending -= len(batch)
            for message in batch:
                try:
                    envelope = events_pb2.EventEnvelope.FromString(message.data)
                except DecodeError:
                    continue
                assert message.headers is not None
                assert message.headers[events.MSG_ID] == envelope.event_id
                found.append(envelope)
    finally:
        await subscription.unsubscribe()
    return found


def grpcurl(*args: str) -> subprocess.CompletedProcess[str]:
    """The real grpcurl, with the generated descriptor set (no reflection needed)."""
    protoset = str(ROOT / DESCRIPTOR_SET)
    return subprocess.run(
        [find_binary("grpcurl"), "-connect-timeout", "3", "-protoset", protoset, *args],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def reflecting_grpcurl(*args: str) -> subprocess.CompletedProcess[str]:
    """The real grpcurl without a descriptor set: all it knows of the API, the edge's
    reflection told it."""
    return subprocess.run(
        [find_binary("grpcurl"), "-connect-timeout", "3", "-plaintext", *args],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip


@contextlib.contextmanager
def mesh_up(running: RunningMesh) -> Iterator[RunningMesh]:
    """`meshctl up --detach` with `running`'s config, an edge on free ports; at the end
    `meshctl down`, and a check by pid that nothing outlived it."""
    started = running.meshctl(
        "up", "--detach", "--config", str(running.config), *FREE_EDGE_PORTS, check=False
    )
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        yield running
    finally:
        survivors = running.down()
        assert survivors == [], f"processes outlived `meshctl down`: {survivors}"
