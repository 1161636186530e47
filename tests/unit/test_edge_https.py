"""HTTPS at the edge without a running mesh: `edge.https` and `edge.http` in mesh.yaml, the
ports planned for them, the listeners rendered for each mode, and the user's own
certificate checked and copied where the edge's Envoy watches."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import yaml

from mesh.control import edge_tls, envoy
from mesh.control.api import Api
from mesh.control.contracts import DESCRIPTOR_SET, Workspace
from mesh.control.envoy import edge
from mesh.control.pki import MeshPKI
from mesh.control.plan import make_plan
from mesh.control.topology import EdgeHttps, Topology, parse
from mesh.deploy import commands, compose, containers, kube
from tests.support.topology import parse_error

EDGE = """\
services:
  identity: {}
  inventory: {}
edge:
  port: 8080
  expose: [identity, inventory]
  auth: {public: [identity.GetJwks, inventory.GetStock]}
"""


def with_edge(*lines: str) -> Topology:
    return parse(EDGE + "".join(f"  {line}\n" for line in lines))


# -- mesh.yaml -----------------------------------------------------------------------------


def test_https_is_off_unless_asked_and_its_port_defaults_to_8443() -> None:
    assert with_edge().edge.https is None
    assert with_edge().edge.http == "on"
    https = with_edge("https: {}").edge.https
    assert https == EdgeHttps(port=8443)
    named = with_edge("https: {port: 0, hosts: [shop.example, '*.shop.example', 10.0.0.7]}")
    assert named.edge.https == EdgeHttps(0, ("shop.example", "*.shop.example", "10.0.0.7"))


@pytest.mark.parametrize(
    ("written", "mode"),
    [("on", "on"), ("off", "off"), ("redirect", "redirect"), ("true", "on"), ("false", "off")],
)
def test_plain_http_is_on_off_or_redirect_as_written_or_as_a_yaml_library_rewrote_it(
    written: str, mode: str
) -> None:
    assert with_edge("https: {}", f"http: {written}").edge.http == mode


@pytest.mark.parametrize(
    ("lines", "line", "expected"),
    [
        (["http: redirect"], 8, "edge.http: redirect leaves clients no way in without edge.https"),
        (["https: {}", "http: maybe"], 9, "edge.http must be one of on, off, redirect"),
        (["https: {port: 70000}"], 8, "edge.https.port must be between 0 and 65535"),
        (["https: {port: 8080}"], 8, "edge.https port 8080 collides with the edge port 8080"),
        (["https: {hosts: [Shop_Example]}"], 8, "'Shop_Example' is neither a DNS name"),
        (["https: {hosts: [a.example, a.example]}"], 8, "edge.https.hosts names 'a.example' twice"),
        (["https:", "  cert_file: edge.pem"], 9, "edge.https.cert_file needs key_file too"),
        (["https:", "  key_file: edge-key.pem"], 9, "edge.https.key_file needs cert_file too"),
        (
            ["https: {cert_file: a.pem, key_file: b.pem, hosts: [shop.example]}"],
            8,
            "with your own certificate (cert_file) its own names are what clients check",
        ),
        (["https: {certfile: a.pem}"], 8, "unknown key 'certfile' in edge.https"),
    ],
)
def test_mistakes_in_https_are_told_at_their_line(
    lines: list[str], line: int, expected: str
) -> None:
    error = parse_error(EDGE + "".join(f"  {entry}\n" for entry in lines))
    assert error.line == line
    assert expected in str(error)


def test_plain_http_off_claims_no_port() -> None:
    assert parse(EDGE + "  http: off\n  https: {}\nnats: {port: 8080}\n").nats.port == 8080
    error = parse_error(EDGE + "  https: {}\nnats: {port: 8080}\n")
    assert "nats port 8080 collides with the edge port 8080" in str(error)


def test_the_users_files_are_relative_to_mesh_yaml(tmp_path: Path) -> None:
    https = EdgeHttps(cert_file="certs/edge.pem", key_file="/etc/tls/edge-key.pem")
    assert https.own_files(tmp_path / "mesh.yaml") == (
        tmp_path / "certs" / "edge.pem",
        Path("/etc/tls/edge-key.pem"),
    )
    assert EdgeHttps().own_files(tmp_path / "mesh.yaml") is None


# -- the plan ------------------------------------------------------------------------------


def counting() -> Any:
    ports = iter(range(30_000, 31_000))
    return lambda: next(ports)


@pytest.mark.parametrize(("mode", "plain"), [("on", 8080), ("redirect", 8080), ("off", 0)])
def test_the_edge_plan_has_a_port_per_listener(tmp_path: Path, mode: str, plain: int) -> None:
    topology = with_edge("https: {port: 8443}", f"http: {mode}")
    plan = make_plan(topology, tmp_path, counting())
    assert plan.edge is not None
    assert (plan.edge.port, plan.edge.https_port) == (plain, 8443)
    listening = dict(plan.listeners())
    assert listening[8443] == "the edge's HTTPS"
    assert (8080 in listening) == (mode != "off")
    # The edge's own calls: to its plain port when that serves clients, else to one of
    # their own on loopback.
    if mode == "on":
        assert (plan.edge.internal_port, plan.edge.own_port) == (0, 8080)
    else:
        assert listening[plan.edge.internal_port] == "the edge's own calls"
        assert plan.edge.own_port == plan.edge.internal_port


def test_command_line_ports_override_mesh_yaml_and_zero_picks_a_free_one(tmp_path: Path) -> None:
    topology = with_edge("https: {port: 8443}")
    plan = make_plan(topology, tmp_path, counting(), edge_port=0, https_port=0)
    assert plan.edge is not None
    assert 30_000 <= plan.edge.port < plan.edge.https_port < 31_000


# -- the listeners -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def api() -> Api:
    return Api.from_descriptor_set(Workspace.find(Path(__file__).parent).root / DESCRIPTOR_SET)


def rendered(topology: Topology, api: Api, tmp_path: Path) -> dict[str, dict[str, Any]]:
    """The edge's listeners by name, as the supervisor renders them."""
    plan = make_plan(topology, tmp_path, counting())
    pki = MeshPKI(tmp_path / "pki", topology.trust_domain, topology.namespace)
    cert = pki.ensure("edge", "edge")
    sds = envoy.write_sds(tmp_path, cert.cert_path, cert.key_path, pki.ca_path)
    sds = envoy.write_server_sds(sds, tmp_path, *edge_tls.server_pair(topology, pki, None))
    config = edge.edge_config(topology, plan, api, sds, edge.files_in(tmp_path))
    return {item["name"]: item for item in config["static_resources"]["listeners"]}


def manager(listener: dict[str, Any]) -> dict[str, Any]:
    config: dict[str, Any] = listener["filter_chains"][0]["filters"][0]["typed_config"]
    return config


def test_https_runs_the_same_chain_over_tls_1_2_or_1_3_with_h2_by_alpn(
    api: Api, tmp_path: Path
) -> None:
    listeners = rendered(with_edge("https: {port: 8443}"), api, tmp_path)
    assert list(listeners) == ["edge", "edge_https"]
    plain, https = manager(listeners["edge"]), manager(listeners["edge_https"])
    assert https["http_filters"] == plain["http_filters"]
    routes = [route["match"] for route in plain["route_config"]["virtual_hosts"][0]["routes"]]
    assert [r["match"] for r in https["route_config"]["virtual_hosts"][0]["routes"]] == routes
    tls = listeners["edge_https"]["filter_chains"][0]["transport_socket"]["typed_config"]
    context = tls["common_tls_context"]
    assert context["alpn_protocols"] == ["h2", "http/1.1"]
    assert context["tls_params"] == {
        "tls_minimum_protocol_version": "TLSv1_2",
        "tls_maximum_protocol_version": "TLSv1_3",
    }
    assert "require_client_certificate" not in tls
    [secret] = context["tls_certificate_sds_secret_configs"]
    watched = secret["sds_config"]["path_config_source"]["watched_directory"]["path"]
    assert watched == str(tmp_path / "pki" / edge_tls.EDGE_HTTPS_INSTANCE)
    # Plain HTTP serves clients too, so browsers are not told to keep to HTTPS.
    assert "response_headers_to_add" not in https["route_config"]["virtual_hosts"][0]


def test_redirect_mode_sends_rest_to_https_and_refuses_grpc_naming_the_port(
    api: Api, tmp_path: Path
) -> None:
    listeners = rendered(with_edge("https: {port: 8443}", "http: redirect"), api, tmp_path)
    assert list(listeners) == ["edge_internal", "edge_https", "edge_redirect"]
    assert listeners["edge_redirect"]["address"]["socket_address"]["port_value"] == 8080
    redirect = manager(listeners["edge_redirect"])
    assert redirect["http_filters"] == [envoy.connection_manager.ROUTER]
    health, grpc, rest = redirect["route_config"]["virtual_hosts"][0]["routes"]
    assert health["match"] == {"path": "/healthz"}
    assert grpc["match"]["headers"][0]["string_match"] == {"prefix": "application/grpc"}
    headers = {h["header"]["key"]: h["header"]["value"] for h in grpc["response_headers_to_add"]}
    assert headers["grpc-status"] == "9"
    assert headers["grpc-message"].endswith("use TLS on port 8443")
    assert rest["redirect"] == {
        "https_redirect": True,
        "port_redirect": 8443,
        "response_code": "PERMANENT_REDIRECT",
    }
    https = manager(listeners["edge_https"])["route_config"]["virtual_hosts"][0]
    assert https["response_headers_to_add"] == [
        {"header": {"key": "strict-transport-security", "value": "max-age=31536000"}}
    ]


def test_without_plain_http_the_edges_own_calls_stay_on_loopback(api: Api, tmp_path: Path) -> None:
    topology = with_edge("https: {port: 8443}", "http: off")
    plan = make_plan(topology, tmp_path, counting())
    listeners = rendered(topology, api, tmp_path)
    assert list(listeners) == ["edge_internal", "edge_https"]
    assert plan.edge is not None
    internal = listeners["edge_internal"]["address"]["socket_address"]
    assert internal == {"address": "127.0.0.1", "port_value": plan.edge.internal_port}
    assert edge.client_url(topology, plan.edge) == "https://127.0.0.1:8443"


def test_containers_publish_what_each_mode_serves() -> None:
    for mode, ports in [("on", (8080, 8443, 0)), ("off", (0, 8443, 15080))]:
        topology = with_edge("https: {}", f"http: {mode}")
        edge_plan = containers.plan(topology, lambda i: i.name, routing_root=Path("/r")).edge
        assert edge_plan is not None
        assert (edge_plan.port, edge_plan.https_port, edge_plan.internal_port) == ports


# -- the user's own certificate -------------------------------------------------------------


def users_pair(directory: Path, names: list[str]) -> tuple[Path, Path, int]:
    """A certificate and key from a CA that is not the mesh's: (cert, key, serial)."""
    info = MeshPKI(directory, "users.example", "tls").issue_server("edge", names)
    return info.cert_path, info.key_path, info.serial


def test_a_pair_is_copied_key_first_only_when_it_belongs_together(tmp_path: Path) -> None:
    cert, key, serial = users_pair(tmp_path / "mine", ["localhost"])
    other_cert, other_key, _ = users_pair(tmp_path / "other", ["localhost"])
    pair = edge_tls.CopiedPair(cert, key, tmp_path / "edge" / "tls")

    assert edge_tls.copy_pair(pair).serial_number == serial
    assert pair.cert.read_bytes() == cert.read_bytes()
    assert pair.key.read_bytes() == key.read_bytes()
    assert oct(pair.key.stat().st_mode & 0o777) == "0o600"
    mismatched = edge_tls.CopiedPair(cert, other_key, pair.into)
    with pytest.raises(edge_tls.EdgeTlsError, match="is not the key of the certificate"):
        edge_tls.copy_pair(mismatched)
    assert pair.key.read_bytes() == key.read_bytes()
    assert edge_tls.checked_pair(other_cert, other_key)[2].serial_number != serial


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        ("cert", "holds no PEM certificate"),
        ("key", "holds no unencrypted PEM private key"),
        ("missing", "cannot read"),
    ],
)
def test_an_unusable_pair_is_told_at_the_line_of_cert_file(
    tmp_path: Path, damage: str, expected: str
) -> None:
    cert, key, _ = users_pair(tmp_path / "mine", ["localhost"])
    if damage == "missing":
        key.unlink()
    else:
        (cert if damage == "cert" else key).write_text("not PEM\n")
    config = tmp_path / "mesh.yaml"
    config.write_text(EDGE + f"  https:\n    cert_file: {cert}\n    key_file: {key}\n")
    topology = dataclasses.replace(parse(config.read_text()), source=config)
    [problem] = edge_tls.problems(topology)
    assert problem.startswith(f"{config}:9: edge.https: ")
    assert expected in problem


def test_the_watcher_copies_a_replaced_pair_however_it_was_written(tmp_path: Path) -> None:
    """A rename, a write in place, a key without its certificate yet: copied when, and
    only when, the two belong together."""
    cert, key, first = users_pair(tmp_path / "mine", ["localhost"])
    watcher = edge_tls.PairWatcher(edge_tls.CopiedPair(cert, key, tmp_path / "tls"))
    assert watcher.poll()
    assert not watcher.poll()  # nothing changed

    new_cert, new_key, second = users_pair(tmp_path / "next", ["localhost"])
    copied = (watcher.pair.cert, watcher.pair.key)
    key.write_bytes(new_key.read_bytes())  # in place, and the certificate not yet
    assert not watcher.poll()
    assert edge_tls.checked_pair(*copied)[2].serial_number == first
    cert.write_bytes(new_cert.read_bytes())
    assert watcher.poll()
    assert edge_tls.checked_pair(*copied)[2].serial_number == second


# -- in containers ---------------------------------------------------------------------------


def test_compose_copies_the_users_certificate_from_its_directories_for_the_edge(api: Api) -> None:
    topology = with_edge(
        "http: off", "https: {cert_file: certs/edge.pem, key_file: /etc/tls/edge-key.pem}"
    )
    rendered_files = compose.render(topology, api).files
    document = yaml.safe_load(rendered_files[Path(compose.COMPOSE_FILE)])
    services = document["services"]
    sources = ["./certs:/etc/shop/user-tls/0:ro", "/etc/tls:/etc/shop/user-tls/1:ro"]
    copying = [*sources, "edge-tls:/shop/edge-tls"]
    tls = [
        "--tls-cert", "/etc/shop/user-tls/0/edge.pem",
        "--tls-key", "/etc/shop/user-tls/1/edge-key.pem",
        "--tls-dir", "/shop/edge-tls",
    ]  # fmt: skip
    assert services["edge-files"]["command"][-6:] == tls
    assert services["edge-files"]["volumes"][1:] == copying
    assert services["edge-companion"]["command"][-6:] == tls
    assert services["edge-companion"]["volumes"][1:] == copying
    assert "edge-tls:/shop/edge-tls:ro" in services["edge"]["volumes"]
    assert services["edge"]["ports"] == ["${EDGE_HTTPS_PUBLISH}:8443"]  # plain HTTP off
    assert "edge-tls" in document["volumes"]
    server = yaml.safe_load(rendered_files[compose.FILES_DIR / "edge" / "sds-server.yaml"])
    certificate = server["resources"][0]["tls_certificate"]["certificate_chain"]
    assert certificate == {"filename": "/shop/edge-tls/cert.pem"}


def test_kubernetes_serves_https_from_the_secret_edge_tls(api: Api) -> None:
    topology = with_edge("http: off", "https: {hosts: [shop.example]}")
    files = kube.render(topology, api).files
    objects = [o for o in yaml.safe_load_all(files[kube.BASE / "edge.yaml"]) if o]
    [service] = [o for o in objects if o["kind"] == "Service"]
    assert [(p["name"], p["port"]) for p in service["spec"]["ports"]] == [("https", 8443)]
    [deployment] = [o for o in objects if o["kind"] == "Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    assert {"name": "edge-tls", "secret": {"secretName": "edge-tls"}} in pod["volumes"]
    [envoy_container] = [c for c in pod["initContainers"] if c["name"] == "envoy"]
    mount = {"name": "edge-tls", "mountPath": "/etc/shop/edge-tls", "readOnly": True}
    assert mount in envoy_container["volumeMounts"]
    prod = [o for o in yaml.safe_load_all(files[kube.PROD / "prod.yaml"]) if o]
    [https] = [o["spec"] for o in prod if o["metadata"]["name"] == "edge-tls"]
    assert https["dnsNames"] == [
        "localhost", "edge.shop.svc", "edge.shop.svc.cluster.local", "shop.example",
    ]  # fmt: skip
    assert https["ipAddresses"] == ["127.0.0.1"]


def test_edge_files_copies_the_users_certificate_or_refuses_a_mismatched_one(
    tmp_path: Path,
) -> None:
    root = Workspace.find(Path(__file__).parent).root
    topology = with_edge("https: {cert_file: edge.pem, key_file: edge-key.pem}")
    cert, key, serial = users_pair(tmp_path / "mine", ["localhost"])
    _, other_key, _ = users_pair(tmp_path / "other", ["localhost"])
    copied = edge_tls.CopiedPair(cert, key, tmp_path / "edge-tls")
    assert commands.write_edge_files(root, topology, tmp_path / "edge", copied) == 0
    assert edge_tls.checked_pair(copied.cert, copied.key)[2].serial_number == serial
    mismatched = edge_tls.CopiedPair(cert, other_key, tmp_path / "other-tls")
    with pytest.raises(commands.DeployError, match="is not the key of the certificate"):
        commands.write_edge_files(root, topology, tmp_path / "refused", mismatched)
    assert not mismatched.into.exists()
    assert not (tmp_path / "refused").exists()
