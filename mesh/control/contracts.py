"""The contracts toolchain: vendoring third-party protos, generating code, guarding changes.

`protos/` is the single source of truth. From it `generate` produces, in one pass:

* a descriptor set (`gen/descriptors/shop.binpb`, with imports and source info) built by
  `buf`, which Envoy's JSON transcoder and the OpenAPI generator read;
* the Python package `shop.<service>.<version>` (`*_pb2.py`, `*_pb2.pyi`, `*_pb2_grpc.py`)
  under `gen/python`, produced by protoc *from that descriptor set*, so stubs and
  descriptors can never come from two different parses.

Third-party protos (`google/api`, `google/type`) are copied from the pinned
`googleapis-common-protos` package, whose Python modules the generated code imports at
run time: the `.proto` files we compile against and the modules we run with are the same
release.

What clients may rely on is recorded in the repository: `release` writes a buf image of
the contracts to `contracts/released.binpb`, and `breaking` compares the working tree with
that image, not with a commit, so a break stays refused however many commits follow it,
in a clean clone as anywhere, until someone releases it on purpose.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import descriptor_pb2
from google.protobuf.message import DecodeError, Message

from mesh.control.binaries import find_binary

#: Third-party protos imported by ours, vendored from googleapis-common-protos.
VENDORED_PROTOS = (
    "google/api/annotations.proto",
    "google/api/field_behavior.proto",
    "google/api/http.proto",
    "google/api/resource.proto",
    "google/api/visibility.proto",
    "google/type/money.proto",
    "google/type/postal_address.proto",
    # Not imported by our protos, but in the descriptor set so the edge's transcoder can
    # render gRPC errors, details included, as JSON (`convert_grpc_status`).
    "google/rpc/code.proto",
    "google/rpc/error_details.proto",
    "google/rpc/status.proto",
)

#: Our own protos live under this directory of the module root.
OWN_PROTO_PACKAGE = "shop"

DESCRIPTOR_SET = Path("gen/descriptors/shop.binpb")
PYTHON_OUT = Path("gen/python")


class ContractsError(RuntimeError):
    """A contracts step failed; the message says which and why."""


@dataclass(frozen=True)
class Workspace:
    """A buf workspace: a directory holding `buf.yaml` and the `protos/` module."""

    root: Path

    @property
    def protos(self) -> Path:
        return self.root / "protos"

    @classmethod
    def find(cls, start: Path | None = None) -> Workspace:
        """The nearest directory at or above `start` (default: cwd) with a `buf.yaml`."""
        here = (start or Path.cwd()).resolve()
        for candidate in (here, *here.parents):
            if (candidate / "buf.yaml").is_file():
                return cls(candidate)
        raise ContractsError(f"no buf.yaml at or above {here}: run this inside the repository")

    def own_protos(self) -> list[str]:
        """Our proto files, relative to the module root, in a stable order."""
        own = self.protos / OWN_PROTO_PACKAGE
        return sorted(str(p.relative_to(self.protos)) for p in own.rglob("*.proto"))


def _run(args: list[str], cwd: Path, what: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(args, cwd=cwd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        output = (result.stdout + result.stderr).strip()
        raise ContractsError(f"{what} failed (exit {result.returncode}):\n{output}")
    return result


def _googleapis_proto(relative: str) -> Path:
    """The `.proto` file shipped inside the installed googleapis-common-protos package."""
    from google.api import annotations_pb2  # the package's own modules sit beside its protos

    path = Path(annotations_pb2.__file__).resolve().parents[2] / relative
    if not path.is_file():
        raise ContractsError(f"googleapis-common-protos does not ship {relative}")
    return path


def vendor(ws: Workspace) -> list[Path]:
    """Copy the third-party protos into the module; return the files written."""
    written = []
    for relative in VENDORED_PROTOS:
        target = ws.protos / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(_googleapis_proto(relative), target)
        written.append(target)
    return written


def stale_vendored(ws: Workspace) -> list[str]:
    """Vendored protos that are missing or differ from the installed package's copy."""
    stale = []
    for relative in VENDORED_PROTOS:
        ours = ws.protos / relative
        if not ours.is_file() or ours.read_bytes() != _googleapis_proto(relative).read_bytes():
            stale.append(relative)
    return stale


def lint(ws: Workspace) -> None:
    """`buf lint` the module; raise with buf's findings if it is not clean."""
    _run([find_binary("buf"), "lint"], ws.root, "buf lint")


def build_descriptor_set(ws: Workspace, output: Path) -> Path:
    """Build a FileDescriptorSet with imports and source info (comments) included."""
    return _buf_build(ws, output, "--as-file-descriptor-set")


def load_descriptor_set(path: Path) -> descriptor_pb2.FileDescriptorSet:
    """Read a FileDescriptorSet as `buf build` writes it."""
    return descriptor_pb2.FileDescriptorSet.FromString(path.read_bytes())


def generate(ws: Workspace) -> tuple[Path, Path]:
    """Generate the descriptor set and the `shop` Python package; return both locations."""
    descriptor_set = build_descriptor_set(ws, ws.root / DESCRIPTOR_SET)
    python_out = ws.root / PYTHON_OUT
    python_out.mkdir(parents=True, exist_ok=True)
    # Generate beside the old package, then swap, so a failed run leaves the old one usable
    # and files of deleted protos do not linger.
    with tempfile.TemporaryDirectory(dir=python_out, prefix=".gen-") as staging_dir:
        staging = Path(staging_dir)
        protoc = [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"--descriptor_set_in={descriptor_set}",
            f"--python_out={staging}",
            f"--pyi_out={staging}",
            f"--grpc_python_out={staging}",
            *ws.own_protos(),
        ]
        _run(protoc, ws.root, "protoc (Python stubs)")
        package = staging / OWN_PROTO_PACKAGE
        for directory in [package, *(p for p in package.rglob("*") if p.is_dir())]:
            (directory / "__init__.py").touch()
        (package / "py.typed").touch()
        final = python_out / OWN_PROTO_PACKAGE
        if final.exists():
            shutil.rmtree(final)
        package.rename(final)
    return descriptor_set, final


#: The released contracts: the image `breaking` compares with, moved only by `release`.
RELEASED_IMAGE = Path("contracts/released.binpb")

#: The repeated fields of each descriptor that hold named definitions of their own.
_MEMBERS = {
    "FileDescriptorProto": ("message_type", "enum_type", "service", "extension"),
    "DescriptorProto": ("field", "nested_type", "enum_type", "extension"),
    "EnumDescriptorProto": ("value",),
    "ServiceDescriptorProto": ("method",),
}


def build_image(ws: Workspace, output: Path) -> Path:
    """Build a buf image of the contracts, for `breaking` to compare with.

    Source info is left out, so the image changes only when a definition does, never for
    a comment or a moved line. Imports (the well-known types) stay in: buf resolves the
    image's files against them when it reads it back.
    """
    return _buf_build(ws, output, "--exclude-source-info")


def _buf_build(ws: Workspace, output: Path, option: str) -> Path:
    """`buf build` the module into `output`, in the form `option` asks for."""
    output.parent.mkdir(parents=True, exist_ok=True)
    _run([find_binary("buf"), "build", option, "-o", str(output)], ws.root, "buf build")
    return output


def definitions(files: descriptor_pb2.FileDescriptorSet) -> dict[str, bytes]:
    """Every file and named definition, by full name, with its serialized descriptor.

    A container's descriptor is taken without its members, which are definitions of their
    own, so a changed field shows as that field alone and not as its message too.
    """
    found: dict[str, bytes] = {}
    for file in files.file:
        _collect(file, file.name, file.package, found)
    return found


def _collect(element: Message, name: str, scope: str, found: dict[str, bytes]) -> None:
    members = _MEMBERS.get(element.DESCRIPTOR.name, ())
    own = type(element)()
    own.CopyFrom(element)
    for field in members:
        own.ClearField(field)
    found[name] = own.SerializeToString(deterministic=True)
    for field in members:
        for member in getattr(element, field):
            full_name = f"{scope}.{member.name}" if scope else member.name
            _collect(member, full_name, full_name, found)


@dataclass(frozen=True)
class Changes:
    """How two sets of definitions differ, each list by full name in order."""

    added: list[str]
    removed: list[str]
    changed: list[str]


def changes(previous: dict[str, bytes], current: dict[str, bytes]) -> Changes:
    """What `current` adds to, removes from and changes in `previous` (`definitions`)."""
    kept = previous.keys() & current.keys()
    return Changes(
        added=sorted(current.keys() - previous.keys()),
        removed=sorted(previous.keys() - current.keys()),
        changed=sorted(name for name in kept if previous[name] != current[name]),
    )


@dataclass(frozen=True)
class Release:
    """The image `release` wrote, and its changes since the previous release (None if first)."""

    image: Path
    sha256: str
    changes: Changes | None


def _image_definitions(image: Path) -> dict[str, bytes]:
    try:
        return definitions(load_descriptor_set(image))
    except DecodeError as error:
        raise ContractsError(
            f"{image} is not a buf image ({error}): restore it from git, or delete it and"
            " run `meshctl proto release` again"
        ) from None


def release(ws: Workspace) -> Release:
    """Record the working tree's contracts as the released ones that `breaking` guards."""
    image = ws.root / RELEASED_IMAGE
    previous = _image_definitions(image) if image.is_file() else None
    image.parent.mkdir(parents=True, exist_ok=True)
    # Built beside the image, then swapped in, so a failed build keeps the old release.
    with tempfile.TemporaryDirectory(dir=image.parent, prefix=".release-") as staging:
        build_image(ws, Path(staging) / image.name).replace(image)
    return Release(
        image=RELEASED_IMAGE,
        sha256=hashlib.sha256(image.read_bytes()).hexdigest(),
        changes=None if previous is None else changes(previous, _image_definitions(image)),
    )


def breaking(ws: Workspace, against: str | None = None) -> str:
    """`buf breaking` the working tree against a buf input; return the input compared with.

    `against` defaults to the released contracts (`RELEASED_IMAGE`). Raises
    ContractsError listing the breaking changes when there are any.
    """
    if against is None:
        if not (ws.root / RELEASED_IMAGE).is_file():
            raise ContractsError(
                f"no released contracts to compare with ({RELEASED_IMAGE} is missing): run"
                " `meshctl proto release` to record the current protos as released"
            )
        against = str(RELEASED_IMAGE)
    # The well-known types the contracts import are buf's to keep, not ours to guard.
    _run(
        [find_binary("buf"), "breaking", "--exclude-imports", "--against", against],
        ws.root,
        f"buf breaking against {against}",
    )
    return against
