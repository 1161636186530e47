"""The contracts toolchain: vendoring third-party protos, generating code, guarding changes.

`protos/` is the single source of truth. From it `generate` produces, in one pass:

* a descriptor set (`gen/descriptors/shop.binpb`, with imports and source info) built by
  `buf`, which Envoy's JSON transcoder and the OpenAPI generator read;
* the Python package `shop.<service>.v1` (`*_pb2.py`, `*_pb2.pyi`, `*_pb2_grpc.py`) under
  `gen/python`, produced by protoc *from that descriptor set*, so stubs and descriptors can
  never come from two different parses.

Third-party protos (`google/api`, `google/type`) are copied from the pinned
`googleapis-common-protos` package, whose Python modules the generated code imports at
run time: the `.proto` files we compile against and the modules we run with are the same
release.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import descriptor_pb2

from mesh.control.binaries import find_binary

#: Third-party protos imported by ours, vendored from googleapis-common-protos.
VENDORED_PROTOS = (
    "google/api/annotations.proto",
    "google/api/field_behavior.proto",
    "google/api/http.proto",
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
    output.parent.mkdir(parents=True, exist_ok=True)
    _run(
        [find_binary("buf"), "build", "--as-file-descriptor-set", "-o", str(output)],
        ws.root,
        "buf build",
    )
    return output


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


@dataclass(frozen=True)
class BreakingResult:
    """What `breaking` compared against, and what it found."""

    against: str | None
    message: str


def previous_contracts_ref(ws: Workspace) -> str | None:
    """The commit whose contracts the working tree must stay compatible with.

    Uncommitted contract changes are checked against HEAD; a clean tree (as in CI, where
    HEAD is the commit under test) against HEAD's parent. None when there is no such
    commit, or it has no contracts yet.
    """
    git = shutil.which("git")
    if git is None or not (ws.root / ".git").exists():
        return None

    def rev(spec: str) -> str | None:
        found = subprocess.run(
            [git, "rev-parse", "--verify", "--quiet", f"{spec}^{{commit}}"],
            cwd=ws.root,
            capture_output=True,
            text=True,
            check=False,
        )
        return found.stdout.strip() or None

    head = rev("HEAD")
    if head is None:
        return None
    dirty = subprocess.run(
        [git, "status", "--porcelain", "--", "buf.yaml", "protos"],
        cwd=ws.root,
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    candidate = head if dirty else rev("HEAD~1")
    if candidate is None:
        return None
    has_contracts = subprocess.run(
        [git, "cat-file", "-e", f"{candidate}:buf.yaml"],
        cwd=ws.root,
        capture_output=True,
        check=False,
    )
    return candidate if has_contracts.returncode == 0 else None


def breaking(ws: Workspace, against: str | None = None) -> BreakingResult:
    """`buf breaking` the workspace against `against` (a buf input), or the previous commit.

    Raises ContractsError listing the breaking changes when there are any.
    """
    if against is None:
        ref = previous_contracts_ref(ws)
        if ref is None:
            return BreakingResult(None, "no earlier commit with contracts: nothing to compare")
        against = f".git#ref={ref}"
    _run([find_binary("buf"), "breaking", "--against", against], ws.root, "buf breaking")
    return BreakingResult(against, f"no breaking changes against {against}")
