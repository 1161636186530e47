"""The contracts: buf lint, generated code, the descriptor set, and buf breaking biting."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from google.api import annotations_pb2, field_behavior_pb2, visibility_pb2
from google.protobuf import descriptor_pb2

from mesh.control import contracts

pytestmark = pytest.mark.integration

REPO = contracts.Workspace.find(Path(__file__).parent)
SERVICES = (
    "catalog", "inventory", "orders", "payments", "shipping", "identity", "notifications",
    "processor", "search",
)  # fmt: skip
#: Services only other services call: every method of theirs is internal.
INTERNAL_ONLY = {"processor"}
#: Every package of the services' APIs: each service's v1, and the versions beside it.
API_PACKAGES = [(service, "v1") for service in SERVICES] + [("catalog", "v2")]
CATALOG = "protos/shop/catalog/v1/catalog_service.proto"
CATALOG_V2 = "protos/shop/catalog/v2/catalog_service.proto"


def test_buf_lint_is_clean() -> None:
    contracts.lint(REPO)


def test_vendored_protos_are_those_of_the_pinned_package() -> None:
    assert contracts.stale_vendored(REPO) == []


@pytest.mark.parametrize(("service", "version"), API_PACKAGES)
def test_generated_stubs_import_in_a_fresh_interpreter(service: str, version: str) -> None:
    module = f"shop.{service}.{version}.{service}_service"
    code = f"import {module}_pb2, {module}_pb2_grpc; print({module}_pb2.DESCRIPTOR.package)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"shop.{service}.{version}"


def test_meshctl_proto_needs_no_generated_code() -> None:
    """`meshctl proto gen` makes the generated code, so it must run on a fresh clone."""
    code = (
        "import sys, mesh.cli\n"
        "loaded = sorted(m for m in sys.modules if m == 'shop' or m.startswith('shop.'))\n"
        "assert not loaded, loaded"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


def _descriptor_set() -> descriptor_pb2.FileDescriptorSet:
    return descriptor_pb2.FileDescriptorSet.FromString(
        (REPO.root / contracts.DESCRIPTOR_SET).read_bytes()
    )


def test_descriptor_set_has_imports_and_comments() -> None:
    files = {f.name: f for f in _descriptor_set().file}
    assert {"google/api/http.proto", "google/protobuf/timestamp.proto"} <= files.keys()
    catalog = files["shop/catalog/v1/catalog_service.proto"]
    comments = [loc.leading_comments for loc in catalog.source_code_info.location]
    assert any("CatalogService owns the shop's products" in c for c in comments)


def test_every_rpc_is_either_public_over_http_or_internal() -> None:
    public, internal = [], []
    for file in _descriptor_set().file:
        if not file.package.startswith("shop."):
            continue
        for service in file.service:
            for method in service.method:
                name = f"{file.package}.{service.name}/{method.name}"
                has_http = method.options.HasExtension(annotations_pb2.http)
                restriction = method.options.Extensions[visibility_pb2.method_visibility]
                if restriction.restriction == "INTERNAL":
                    assert not has_http, f"{name} is internal but has an HTTP rule"
                    internal.append(name)
                else:
                    assert has_http, f"{name} is public but has no google.api.http rule"
                    public.append(name)
    assert "shop.catalog.v1.CatalogService/CreateProduct" in public
    assert "shop.inventory.v1.InventoryService/ReserveStock" in internal
    assert "shop.processor.v1.ProcessorService/Authorize" in internal
    assert {n.split(".")[1] for n in public} == set(SERVICES) - INTERNAL_ONLY


def test_idempotency_levels_follow_what_each_rpc_does() -> None:
    """Sidecars retry by these levels, so a read must say so and a keyed mutation too."""
    levels = descriptor_pb2.MethodOptions.IdempotencyLevel
    messages = {f".{f.package}.{m.name}": m for f in _descriptor_set().file for m in f.message_type}
    for file in _descriptor_set().file:
        for service in file.service if file.package.startswith("shop.") else ():
            for method in service.method:
                name = f"{service.name}/{method.name}"
                level = method.options.idempotency_level
                if method.name.startswith(("Get", "List", "BatchGet", "Quote")):
                    assert level == levels.NO_SIDE_EFFECTS, name
                request = messages[method.input_type]
                required_key = any(
                    f.name == "request_id"
                    and field_behavior_pb2.REQUIRED
                    in f.options.Extensions[field_behavior_pb2.field_behavior]
                    for f in request.field
                )
                if required_key:
                    assert level == levels.IDEMPOTENT, name
                if level == levels.IDEMPOTENCY_UNKNOWN:
                    assert any(f.name == "request_id" for f in request.field), (
                        f"{name} is neither marked idempotent nor takes a request_id"
                    )


# buf breaking --------------------------------------------------------------------------


def _copy_workspace(target: Path) -> contracts.Workspace:
    target.mkdir(parents=True)
    shutil.copyfile(REPO.root / "buf.yaml", target / "buf.yaml")
    shutil.copytree(REPO.protos, target / "protos")
    return contracts.Workspace(target)


def _edit(ws: contracts.Workspace, old: str, new: str, proto: str = CATALOG) -> None:
    path = ws.root / proto
    text = path.read_text()
    assert old in text, f"{old!r} not in {proto}"
    path.write_text(text.replace(old, new, 1))


FIELD_TYPE_CHANGE = ("  int32 initial_stock = 2 [", "  int64 initial_stock = 2 [")
FIELD_REMOVAL = (
    "  string description = 3 [(shop.options.v1.limits) = {max_length: 10000}];\n",
    "  reserved 3;\n",
)
ANCHOR = "  // The REST path of this product's stock level"
BRAND = "  string brand = 11 [(shop.options.v1.limits) = {max_length: 64}];"
ADDITION = (ANCHOR, f"  // The brand the product is sold under.\n{BRAND}\n{ANCHOR}")


BREAKS = pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (FIELD_TYPE_CHANGE, 'changed type from "int32" to "int64"'),
        (FIELD_REMOVAL, 'Previously present field "3" with name "description"'),
    ],
    ids=["field-type-changed", "field-removed"],
)


@BREAKS
def test_breaking_refuses_a_break_of_the_released_contracts(
    tmp_path: Path, edit: tuple[str, str], expected: str
) -> None:
    ws = _copy_workspace(tmp_path / "ws")
    contracts.release(ws)
    _edit(ws, *edit)
    with pytest.raises(contracts.ContractsError) as refused:
        contracts.breaking(ws)
    assert expected in str(refused.value)
    assert str(contracts.RELEASED_IMAGE) in str(refused.value)


@BREAKS
def test_breaking_refuses_a_break_against_a_directory(
    tmp_path: Path, edit: tuple[str, str], expected: str
) -> None:
    base = _copy_workspace(tmp_path / "base")
    changed = _copy_workspace(tmp_path / "changed")
    _edit(changed, *edit)
    with pytest.raises(contracts.ContractsError) as refused:
        contracts.breaking(changed, against=str(base.root))
    assert expected in str(refused.value)


#: Breaks of v2, each with what buf says of it.
V2_BREAKS = pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (
            ("  string product_id = 2 [", "  bytes product_id = 2 ["),
            'changed type from "string" to "bytes"',
        ),
        (
            ("  string display_name = 2 [", "  string title = 2 ["),
            'changed name from "display_name" to "title"',
        ),
    ],
    ids=["field-type-changed", "field-renamed"],
)


@V2_BREAKS
def test_breaking_guards_v2_beside_v1(tmp_path: Path, edit: tuple[str, str], expected: str) -> None:
    """Each version of an API is its own package, and buf guards every file of the
    released image: a break of v2 is refused as one of v1 is."""
    ws = _copy_workspace(tmp_path / "ws")
    contracts.release(ws)
    _edit(ws, *edit, proto=CATALOG_V2)
    with pytest.raises(contracts.ContractsError) as refused:
        contracts.breaking(ws)
    assert expected in str(refused.value)
    assert "shop/catalog/v2/catalog_service.proto" in str(refused.value)


def test_the_released_contracts_hold_every_api_version() -> None:
    """What `meshctl proto breaking` guards in the repository: v2 as well as v1, so a
    break of either is refused from here on."""
    released = contracts.definitions(
        contracts.load_descriptor_set(REPO.root / contracts.RELEASED_IMAGE)
    )
    for service, version in API_PACKAGES:
        service_name = "".join(part.capitalize() for part in service.split("_"))
        assert f"shop.{service}.{version}.{service_name}Service" in released


def test_breaking_accepts_an_additive_change(tmp_path: Path) -> None:
    ws = _copy_workspace(tmp_path / "ws")
    contracts.release(ws)
    _edit(ws, *ADDITION)
    contracts.lint(ws)
    assert contracts.breaking(ws) == str(contracts.RELEASED_IMAGE)


def test_breaking_without_released_contracts_says_to_release(tmp_path: Path) -> None:
    ws = _copy_workspace(tmp_path / "ws")
    result = subprocess.run(
        [str(Path(sys.executable).parent / "meshctl"), "proto", "breaking"],
        cwd=ws.root,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert "meshctl proto release" in result.stderr
    assert "Traceback" not in result.stderr


def test_release_lists_what_changed_since_the_previous_release(tmp_path: Path) -> None:
    ws = _copy_workspace(tmp_path / "ws")
    assert contracts.release(ws).changes is None
    _edit(ws, *ADDITION)
    _edit(ws, *FIELD_REMOVAL)
    changes = contracts.release(ws).changes
    assert changes == contracts.Changes(
        added=["shop.catalog.v1.Product.brand"],
        removed=["shop.catalog.v1.Product.description"],
        changed=["shop.catalog.v1.Product"],  # its reserved numbers
    )


def test_release_ignores_comments_and_layout(tmp_path: Path) -> None:
    """The image holds definitions only, so rewording a comment does not move it."""
    ws = _copy_workspace(tmp_path / "ws")
    first = contracts.release(ws)
    _edit(ws, "\n  // The REST path of", "\n\n  // The REST location of")
    again = contracts.release(ws)
    assert again.sha256 == first.sha256
    assert again.changes == contracts.Changes(added=[], removed=[], changed=[])


def _git(ws: contracts.Workspace, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=test", "-c", "user.email=test@localhost", *args],
        cwd=ws.root,
        check=True,
        capture_output=True,
    )


def _released_repository(path: Path) -> contracts.Workspace:
    """A git repository of the contracts, released and committed on `main`."""
    ws = _copy_workspace(path)
    contracts.release(ws)
    _git(ws, "init", "--quiet", "--initial-branch=main")
    _git(ws, "add", ".")
    _git(ws, "commit", "--quiet", "-m", "contracts")
    return ws


def test_a_committed_break_stays_refused_under_later_commits(tmp_path: Path) -> None:
    ws = _released_repository(tmp_path / "repo")
    _edit(ws, *FIELD_TYPE_CHANGE)
    _git(ws, "commit", "--quiet", "-am", "widen the initial stock")
    (ws.root / "NOTES.md").write_text("Unrelated to the contracts.\n")
    _git(ws, "add", "NOTES.md")
    _git(ws, "commit", "--quiet", "-m", "notes")
    with pytest.raises(contracts.ContractsError, match='changed type from "int32" to "int64"'):
        contracts.breaking(ws)
    released = contracts.release(ws)
    assert released.changes is not None
    assert released.changes.changed == ["shop.catalog.v1.CreateProductRequest.initial_stock"]
    contracts.breaking(ws)


def test_breaking_against_a_git_branch(tmp_path: Path) -> None:
    ws = _released_repository(tmp_path / "repo")
    _git(ws, "switch", "--quiet", "--create", "feature")
    _edit(ws, *FIELD_REMOVAL)
    _git(ws, "commit", "--quiet", "-am", "drop the description")
    _git(ws, "commit", "--quiet", "--allow-empty", "-m", "later")
    with pytest.raises(contracts.ContractsError, match='with name "description"'):
        contracts.breaking(ws, against=".git#branch=main")
    assert contracts.breaking(ws, against=".git#branch=feature") == ".git#branch=feature"
