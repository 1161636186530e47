"""The documentation runs: every shell block of README.md and docs/*.md, in order, typed
into one terminal against a throwaway mesh, as a new user would follow the text.

**Which blocks.** A fence tagged `sh`, `bash`, `shell` or `console` holds commands; any
other tag (`yaml`, `text`, `proto`) holds something else, and a fence without a tag is
refused, so a block of commands cannot pass for output by leaving its tag out. Every
shell block runs unless the line right above its fence says why not:

    <!-- not run: needs a Docker engine; `make test` checks the Compose file instead -->

Such a block is listed, with its reason, by `test_each_block_not_run_says_why`. A new
block runs by default, so it cannot go untested unnoticed; tests/unit/test_docs_blocks.py
checks the marking of the real docs without a mesh.

**How a block runs.** Each command (its lines joined while a quote or a trailing `\\` is
open; comments left out) runs in bash from the checkout, with the variables the
commands before it set, in this block or an earlier one (`EDGE=...` in one serves the
next), and without the virtual environment activated, as a new user's shell has it (a
bare `meshctl` fails). A command must exit 0, and `curl` is `curl --fail-with-body`, so
an HTTP error fails it too (its body is printed). The optional words of a synopsis
(`[--json]`, `[-n 10]`) are left out: the simplest command the text shows runs. A block
has BLOCK_SECONDS for all its commands.

**The mesh.** One mesh from the checkout's own mesh.yaml, in a temporary run directory,
on two free ports chosen once for the edge (plain and HTTPS). Before each block it is
up, except before a block that starts it itself (`meshctl up`), which finds it down:
the test starts it (`meshctl up --detach`) or stops it (`meshctl down`, then by pid)
as needed, and at the end stops it and checks by pid that nothing outlived it. `make
up` is never run: it stays in the foreground, and `meshctl up --detach` starts the same
mesh. In the commands, as the text writes them:

* `.venv/bin/meshctl` adds the test's `--run-dir` to every command that takes one (last,
  so it also wins over a `--run-dir` the block names), and the edge's two ports to `up`;
  a meshctl command that would start a mesh of its own or write into the checkout
  (`bench`, `chaos`, `render`) is refused, never run against the developer's `.mesh`;
* `127.0.0.1:8080` and `localhost:8080` are the edge's port, `...:8443` its HTTPS port;
* `.mesh/` is the run directory.

**What a command promises.** `# -> TEXT` under a command, continued on the next comment
lines indented past their `#`, says what its output shows: whitespace aside, the pieces
of TEXT between `...` appear in it in order, and each `...` skips only text whose
brackets balance, so `{"results": [{"productId": "...", "name": "Mug"` says the first
result is the Mug. `# -> once CONDITION: TEXT` is what a reader waits for (a saga, an
index catching up): the command runs again until its output shows TEXT, for at most
AWAIT_SECONDS.

**Placeholders** are filled as a reader fills them, from the latest output above that
shows one (a placeholder nothing printed fails, naming where a reader would look):

| placeholder | taken from |
| --- | --- |
| PRODUCT_ID | the product a command printed: `{"product": {"id": ...` |
| ORDER_ID | the order a command printed: `{"order": {"id": ...` |
| APP_PORT | the APP column of the first instance in `meshctl status` |
| TRACE_ID | the first line of `meshctl trace`: `trace <id>: N spans` |
| METRICS_PORT, ADMIN_SOCKET | the first instance in `meshctl status --json` |
| KEY_ID | the ID column of `meshctl keys list` |
| ETAG | the `etag:` header of a response printed with its headers |
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from mesh.control.binaries import find_binary
from mesh.control.local import running_state
from mesh.control.plan import free_port
from tests.support.docs import (
    Block,
    Command,
    Ran,
    Shell,
    ThrowawayMesh,
    blocks,
    commands,
    documents,
    filled,
    reader_environment,
    shows,
    starts_the_mesh,
    until_shown,
    without_optional,
)
from tests.support.mesh import ROOT, RunningMesh

pytestmark = pytest.mark.integration

#: What one block may take, all its commands together (a mesh's start included).
BLOCK_SECONDS = 120
#: How long a reader waits for what a `# -> once ...:` promise says.
AWAIT_SECONDS = 20
#: How much of a failing command's output the failure quotes.
QUOTED_OUTPUT = 3000


def shell_blocks() -> list[Block]:
    return [
        block
        for document in documents(ROOT)
        for block in blocks((ROOT / document).read_text(), document)
        if block.is_shell
    ]


@dataclass
class Reader:
    """A new user at one terminal, working through the docs on the test's mesh."""

    mesh: RunningMesh
    places: ThrowawayMesh
    shell: Shell = field(repr=False)
    outputs: list[str] = field(default_factory=list, repr=False)
    """What each command printed so far, for the placeholders."""

    def follow(self, block: Block) -> None:
        self._have_the_mesh(up=not starts_the_mesh(block))
        deadline = time.monotonic() + BLOCK_SECONDS
        for command in commands(block):
            self._type(block, command, deadline)

    def _type(self, block: Block, command: Command, deadline: float) -> None:
        code = filled(self.places.relocated(without_optional(command.code)), self.outputs)

        def run() -> Ran:
            return self.shell.run(code, deadline - time.monotonic())

        promise = command.expectation
        if promise is not None and promise.once is not None:
            ran, _ = until_shown(
                run, promise.shown, min(AWAIT_SECONDS, deadline - time.monotonic())
            )
        else:
            ran = run()
        where = f"{block.path}:{command.line}"
        assert not ran.timed_out, failure(where, "took longer than its block's time", code, ran)
        assert ran.returncode == 0, failure(where, f"exited {ran.returncode}", code, ran)
        if promise is not None:
            assert shows(ran.output, promise.shown), failure(
                where, f"does not show what the text says: {promise.written}", code, ran
            )
        self.outputs.append(ran.output)

    def _have_the_mesh(self, up: bool) -> None:
        """Start or stop the mesh so that it is up (or down) for the next block."""
        running = running_state(self.mesh.run_dir) is not None
        if up and not running:
            ports = ("--edge-port", str(self.places.edge_port),
                     "--https-port", str(self.places.https_port))  # fmt: skip
            started = self.mesh.meshctl("up", "--detach", *ports, check=False)
            assert started.returncode == 0, started.stdout + started.stderr
        elif running and not up:
            assert self.mesh.down() == [], "processes outlived `meshctl down`"


def failure(where: str, what: str, code: str, ran: Ran) -> str:
    return f"{where}: this command {what}:\n{code}\n--- its output, the end ---\n" + (
        ran.output[-QUOTED_OUTPUT:] or "(none)"
    )


def two_free_ports() -> tuple[int, int]:
    """Two loopback ports free now: chosen once, so that a mesh the test restarts, and
    the addresses a block saved in a variable, keep them."""
    edge_port = free_port()
    https_port = free_port()
    while https_port == edge_port:
        https_port = free_port()
    return edge_port, https_port


@pytest.fixture(scope="module")
def reader(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Reader]:
    directory = tmp_path_factory.mktemp("docs")
    edge_port, https_port = two_free_ports()
    places = ThrowawayMesh(directory / "run", edge_port, https_port, directory / "meshctl")
    places.meshctl.write_text(places.meshctl_script(Path(find_binary("meshctl"))))
    places.meshctl.chmod(0o755)
    mesh = RunningMesh(places.run_dir, ROOT / "mesh.yaml")
    shell = Shell(ROOT, reader_environment(dict(os.environ), Path(sys.prefix)))
    try:
        yield Reader(mesh, places, shell)
    finally:
        survivors = mesh.down()
        assert survivors == [], f"processes outlived `meshctl down`: {survivors}"


@pytest.mark.parametrize(
    "block", [pytest.param(block, id=block.where) for block in shell_blocks() if not block.not_run]
)
def test_a_new_user_can_run_the_block(block: Block, reader: Reader) -> None:
    reader.follow(block)


def test_each_block_not_run_says_why() -> None:
    """The exceptions, each with its reason (tests/unit/test_docs_blocks.py refuses a
    marker without one): what the docs show that this test does not run."""
    exceptions = {block.where: block.not_run for block in shell_blocks() if block.not_run}
    assert exceptions, "every block runs: drop this test's exception list"
    assert all(len(reason) > 20 for reason in exceptions.values()), exceptions
