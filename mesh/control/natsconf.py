"""NATS for the mesh: JetStream on loopback, TLS from the mesh CA, one user per identity.

Every client shows a certificate from the mesh CA; `verify_and_map` makes the SPIFFE ID
in it (`spiffe://<trust domain>/ns/<namespace>/sa/<identity>`) the client's user, and
a user may do only what its identity needs:

* a service `X` publishes its own events (`shop.X.>`), its dead letters (`dead.X`) and
  the notices of the events its outbox parked (`dead.X.outbox`), so a dead letter's
  subject names the one who wrote it; it pulls from and acknowledges its own durable
  consumer `X` (created by
  the mesh with the subjects of `consumes:` in mesh.yaml), and reads replies only under
  its own inbox prefix `_INBOX_X.`. It cannot create consumers, read a stream directly,
  or publish another service's events; but a service that consumes events kept per
  entity (search, of the catalog's) makes, reads and deletes its own rebuild consumer
  `X_rebuild` on `SHOP_ENTITIES`, to rebuild its read model (`services.search.rebuild`);
* `meshctl` (the supervisor and the operator's commands) administers streams,
  consumers and dead letters;
* a client without a certificate, with one from another CA, or with an identity that
  has no user here is refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nats.errors import Error as NatsError

from mesh.control.pki import MeshPKI, service_dns_name
from mesh.control.topology import Service, Topology
from mesh.runtime import consumer, events
from mesh.runtime.events import (
    ENTITIES_STREAM,
    EVENTS_STREAM,
    NatsSettings,
    consumer_dead_subject,
    inbox_prefix,
    parked_subject,
    rebuild_consumer,
)

#: The server's own identity (its certificate's DNS name is what clients verify).
SERVER_IDENTITY = "nats"
#: The identity that administers streams, consumers and dead letters.
ADMIN_IDENTITY = "meshctl"
#: The most bytes of one message, headers included, that the server accepts (NATS's
#: default, stated so the contracts' bounds can be held against it).
MAX_PAYLOAD = 1024 * 1024


def _pulling(stream: str, consumer: str) -> list[str]:
    """What pulling from and acknowledging the consumer `consumer` of `stream` takes."""
    return [
        f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}",
        f"$JS.API.CONSUMER.INFO.{stream}.{consumer}",
        f"$JS.ACK.{stream}.{consumer}.>",
    ]


def _rebuilding(service: str) -> list[str]:
    """What rebuilding its read model takes: making, reading and deleting its rebuild
    consumer on `SHOP_ENTITIES`, the stream of the events kept per entity."""
    name = rebuild_consumer(service)
    return [
        f"$JS.API.CONSUMER.DURABLE.CREATE.{ENTITIES_STREAM}.{name}",
        f"$JS.API.CONSUMER.DELETE.{ENTITIES_STREAM}.{name}",
        *_pulling(ENTITIES_STREAM, name),
    ]


def service_permissions(service: Service) -> tuple[list[str], list[str]]:
    """What the service may publish and subscribe to (allow lists)."""
    name = service.name
    publish = [
        f"shop.{name}.>",
        consumer_dead_subject(name),
        parked_subject(name),
        *_pulling(EVENTS_STREAM, name),
    ]
    if service.rebuilt_subjects:
        publish += _rebuilding(name)
    return publish, [f"{inbox_prefix(name)}.>"]


def _quoted(items: list[str]) -> str:
    return "[" + ", ".join(f'"{item}"' for item in items) + "]"


@dataclass(frozen=True)
class Cluster:
    """The routes of a NATS cluster (each server lists every server, itself included)."""

    port: int
    routes: Sequence[str]
    name: str = "shop-mesh"


@dataclass(frozen=True)
class _TlsFiles:
    """The server's certificate and key, and the CA it trusts its peers from."""

    cert: Path
    key: Path
    ca: Path


def render_config(
    topology: Topology,
    pki: MeshPKI,
    *,
    port: int,
    monitor_port: int | None,
    store_dir: Path,
    cert_path: Path,
    key_path: Path,
    ca_path: Path | None = None,
    host: str = "127.0.0.1",
    server_name: str = "shop-mesh",
    cluster: Cluster | None = None,
) -> str:
    """nats.conf for the mesh: JetStream, TLS with client certificates, the users.

    `sync_interval: always` because with the default (fsync every two minutes) an
    acknowledged message can be lost when the machine crashes, as Jepsen showed for
    NATS 2.10; the saga's events must survive what the services survive.

    In a `cluster` the servers reach each other over mutual TLS with the same mesh
    certificates; `server_name` may then name an environment variable (`$POD_NAME`), as
    every server needs a name of its own.
    """
    files = _TlsFiles(cert_path, key_path, ca_path or pki.ca_path)
    # The monitor has no authentication: only where an orchestrator's probes need it.
    monitor = f'http: "{host}:{monitor_port}"\n' if monitor_port is not None else ""
    routes = _cluster_block(cluster, host, files) if cluster is not None else ""
    return (
        f'listen: "{host}:{port}"\n' + monitor + f"server_name: {server_name}\n"
        f"max_payload: {MAX_PAYLOAD}\n"
        "jetstream {\n"
        f'  store_dir: "{store_dir}"\n'
        "  sync_interval: always\n"
        "}\n"
        + _tls_block(files, "", "verify_and_map: true")
        + routes
        + _authorization(topology, pki)
    )


def _tls_block(files: _TlsFiles, indent: str, *settings: str) -> str:
    lines = [f'cert_file: "{files.cert}"', f'key_file: "{files.key}"', f'ca_file: "{files.ca}"']
    body = "".join(f"{indent}  {line}\n" for line in (*lines, *settings, "timeout: 2"))
    return f"{indent}tls {{\n{body}{indent}}}\n"


def _cluster_block(cluster: Cluster, host: str, files: _TlsFiles) -> str:
    return (
        "cluster {\n"
        f"  name: {cluster.name}\n"
        f'  listen: "{host}:{cluster.port}"\n'
        "  routes: [\n"
        + "".join(f'    "{route}"\n' for route in cluster.routes)
        + "  ]\n"
        # Servers know each other from the routes above, not from gossip, whose IP
        # addresses the certificates do not name.
        + "  no_advertise: true\n"
        + _tls_block(files, "  ", "verify: true")
        + "}\n"
    )


def _authorization(topology: Topology, pki: MeshPKI) -> str:
    """The users: the administrator, and each service with its permissions."""
    users = [f'    {{ user = "{pki.spiffe_id(ADMIN_IDENTITY)}" }}']
    for name, service in sorted(topology.services.items()):
        publish, subscribe = service_permissions(service)
        users.append(
            f'    {{\n      user = "{pki.spiffe_id(name)}"\n'
            f"      permissions = {{\n"
            f"        publish = {{ allow = {_quoted(publish)} }}\n"
            f"        subscribe = {{ allow = {_quoted(subscribe)} }}\n"
            f"      }}\n    }}"
        )
    return "authorization {\n  users = [\n" + "\n".join(users) + "\n  ]\n}\n"


def write_config(
    topology: Topology, pki: MeshPKI, directory: Path, port: int, monitor_port: int | None = None
) -> Path:
    """Issue the server's certificate and write `<directory>/nats.conf`: without HTTP
    monitoring unless `monitor_port` is given, as NATS's monitor takes no credentials
    (the local mesh asks JetStream itself over TLS instead: `jetstream_ready`)."""
    directory.mkdir(parents=True, exist_ok=True)
    cert = pki.ensure(SERVER_IDENTITY, SERVER_IDENTITY)
    config = directory / "nats.conf"
    config.write_text(
        render_config(
            topology,
            pki,
            port=port,
            monitor_port=monitor_port,
            store_dir=directory / "jetstream",
            cert_path=cert.cert_path,
            key_path=cert.key_path,
        )
    )
    return config


def tls_settings(
    address: str, identity: str, *, cert: Path, key: Path, ca: Path, namespace: str
) -> NatsSettings:
    """How `identity` reaches the mesh's NATS at `address` (host:port) with its certificate,
    checking the server's certificate for NATS's name in `namespace`."""
    return NatsSettings(
        url=f"tls://{address}",
        identity=identity,
        ca_path=ca,
        cert_path=cert,
        key_path=key,
        server_name=service_dns_name(SERVER_IDENTITY, namespace),
    )


def client_settings(pki: MeshPKI, port: int, identity: str, instance: str) -> NatsSettings:
    """How `identity` (with its certificate in `instance`) reaches the local mesh's NATS."""
    cert, key = pki.leaf_paths(instance)
    return tls_settings(
        f"127.0.0.1:{port}", identity, cert=cert, key=key, ca=pki.ca_path, namespace=pki.namespace
    )


def admin_settings(pki: MeshPKI, port: int) -> NatsSettings:
    """`meshctl`'s way in (its certificate is issued if need be)."""
    pki.ensure(ADMIN_IDENTITY, ADMIN_IDENTITY)
    return client_settings(pki, port, ADMIN_IDENTITY, ADMIN_IDENTITY)


def admin_from_state(state: dict[str, Any]) -> NatsSettings:
    """meshctl's way into a running mesh's NATS, from its state.json."""
    return NatsSettings.from_environment(ADMIN_IDENTITY, state["nats"]["admin"])


#: What a call to NATS raises when NATS, or its JetStream, does not answer.
UNREACHABLE: tuple[type[BaseException], ...] = (NatsError, OSError, TimeoutError)


async def _unsaid(error: Exception) -> None:
    """A failed attempt the caller reports itself, as it sees fit."""


#: Connect once, or fail, quietly: nats-py takes `max_reconnect_attempts=0` for no limit
#: at all (its server pool drops a server only past a positive count), so 1 it is.
ONE_ATTEMPT: dict[str, Any] = {
    "allow_reconnect": False,
    "max_reconnect_attempts": 1,
    "reconnect_time_wait": 0.5,
    "connect_timeout": 2,
    "error_cb": _unsaid,
}


async def jetstream_ready(settings: NatsSettings) -> bool:
    """Whether NATS takes `settings`' client over TLS and JetStream answers it."""
    try:
        client = await settings.connect(**ONE_ATTEMPT)
    except Exception:  # not up yet, or refusing: not ready
        return False
    try:
        await client.jetstream().account_info()
    except Exception:  # JetStream not ready yet
        return False
    finally:
        await client.close()
    return True


async def prepare_event_bus(
    settings: NatsSettings, topology: Topology, stream_replicas: int = 1, **connecting: Any
) -> None:
    """The streams, and each consuming service's durable consumer (see mesh.yaml);
    `connecting` passed to the client's connect."""
    client = await settings.connect(**connecting)
    try:
        js = client.jetstream()
        await events.ensure_streams(js, stream_replicas)
        for service in topology.services.values():
            if service.consumes:
                await consumer.ensure_consumer(js, service.name, service.consumed_subjects)
    finally:
        await client.close()
