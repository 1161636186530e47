"""The documentation's shell blocks, read as a new user reads them.

Which fenced blocks are commands and which are not, how a block divides into commands,
what each command promises to show (`# -> ...`), how a placeholder the text leaves to
the reader (PRODUCT_ID) is filled from what an earlier command printed, and how the
docs' fixed places (`.mesh/`, port 8080) become the test's own mesh. The rules
themselves are stated once, in tests/integration/test_docs.py, which runs the blocks;
tests/unit/test_docs_blocks.py holds each rule to an example.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

#: Fences in these languages hold commands. Any other language (yaml, text, proto) names
#: something that is not one; a fence without a language is refused, so that a block of
#: commands cannot pass for output by leaving its language out.
SHELL_LANGUAGES = frozenset({"sh", "bash", "shell", "console"})
#: The one marker a block of commands may carry, on the line right before its fence:
#: `<!-- not run: why -->`.
NOT_RUN = "not run:"

_FENCE = re.compile(r"^(?P<indent> *)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
_EXPECTATION = re.compile(r"^\s*# ->(?P<shown>.*)$")
_CONTINUATION = re.compile(r"^\s*#\s{2,}(?P<shown>\S.*)$")
_ONCE = re.compile(r"^once (?P<condition>[^:\"{\[]+):\s*(?P<shown>.*)$", re.S)
#: A bracketed word of a synopsis, `[--json]`, `[-n 10]`, `[catalog]`: optional.
_OPTIONAL = re.compile(r"(?<!\S)\[[^\s\]'\"][^\]'\"\n]*\](?!\S)")
_CLOSERS = {"}": "{", "]": "["}


def documents(root: Path) -> list[str]:
    """The documentation whose shell blocks run, in the order a new user reads it."""
    return ["README.md", *sorted(f"docs/{path.name}" for path in (root / "docs").glob("*.md"))]


class DocsError(Exception):
    """Blocks the test cannot tell what to do with, each named by file and line."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = list(problems)


@dataclass(frozen=True)
class Block:
    """One fenced block of a Markdown file."""

    path: str
    """The file as a reader names it: README.md, docs/saga.md."""
    line: int
    """The line of its opening fence."""
    language: str
    body: str
    not_run: str | None = None
    """Why the test does not run it, from its `<!-- not run: ... -->` marker."""

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"

    @property
    def is_shell(self) -> bool:
        return self.language in SHELL_LANGUAGES


@dataclass(frozen=True)
class Expectation:
    """What a command's output shows, from the `# ->` lines under it."""

    written: str

    @property
    def shown(self) -> str:
        """The text the output shows, `...` standing for anything elided (see `shows`)."""
        once = _ONCE.match(self.written)
        return once["shown"].strip() if once else self.written

    @property
    def once(self) -> str | None:
        """For `# -> once the saga has run: ...`, what the reader waits for: the command
        is run again until its output shows the text."""
        once = _ONCE.match(self.written)
        return once["condition"].strip() if once else None


@dataclass(frozen=True)
class Command:
    """One command of a block, as bash reads it: its lines joined while a quote or a
    trailing backslash leaves them open, comments left out."""

    line: int
    code: str
    expectation: Expectation | None = None


def blocks(text: str, path: str) -> list[Block]:
    """Every fenced block of the Markdown `text`; DocsError names each fence without a
    language, each marker the test does not know, and each fence left open."""
    lines = text.splitlines()
    found: list[Block] = []
    problems: list[str] = []
    index = 0
    while index < len(lines):
        opening = _FENCE.match(lines[index])
        if opening is None:
            index += 1
            continue
        end = _closing_line(lines, index, opening["fence"])
        if end is None:
            problems.append(f"{path}:{index + 1}: this fence is never closed")
            break
        block, problem = _block(lines, index, end, opening, path)
        found.append(block)
        problems += problem
        index = end + 1
    if problems:
        raise DocsError(problems)
    return found


def _closing_line(lines: list[str], opening: int, fence: str) -> int | None:
    for index in range(opening + 1, len(lines)):
        stripped = lines[index].strip()
        if stripped.startswith(fence) and set(stripped) == {fence[0]}:
            return index
    return None


def _block(
    lines: list[str], start: int, end: int, opening: re.Match[str], path: str
) -> tuple[Block, list[str]]:
    indent = len(opening["indent"])
    body = "\n".join(line[indent:] for line in lines[start + 1 : end])
    language = opening["info"].strip().split(" ")[0]
    where = f"{path}:{start + 1}"
    marker = _marker_above(lines, start)
    block = Block(path, start + 1, language, body)
    if not language:
        return block, [f"{where}: a fence without a language: `sh` for commands, `text` "
                       "for output or a drawing"]  # fmt: skip
    if marker is None:
        return block, []
    if not block.is_shell:
        return block, [f"{where}: `<!-- {marker} -->` marks a {language} block, never run"]
    if not marker.startswith(NOT_RUN):
        return block, [f"{where}: unknown marker `<!-- {marker} -->` (only `<!-- not run: "
                       "why -->`)"]  # fmt: skip
    reason = marker.removeprefix(NOT_RUN).strip()
    if not reason:
        return block, [f"{where}: `not run:` needs the reason after it"]
    return Block(path, start + 1, language, body, not_run=reason), []


def _marker_above(lines: list[str], fence: int) -> str | None:
    """The HTML comment that ends on the line right above the fence, if any, its lines
    joined; None for none."""
    last = fence - 1
    if last < 0 or not lines[last].rstrip().endswith("-->"):
        return None
    first = last
    while first > 0 and "<!--" not in lines[first]:
        first -= 1
    text = " ".join(line.strip() for line in lines[first : last + 1])
    return " ".join(text[text.find("<!--") + 4 : text.rfind("-->")].split())


def commands(block: Block) -> list[Command]:
    """The commands of a shell block with what each promises; DocsError for a promise
    that follows no command and a quote left open."""
    found: list[Command] = []
    problems: list[str] = []
    pending: list[str] = []
    first = 0
    expecting = False
    for number, line in enumerate(block.body.splitlines(), block.line + 1):
        if not pending and line.lstrip().startswith("#"):
            expecting = _read_comment(line, found, expecting, f"{block.path}:{number}", problems)
            continue
        expecting = False
        if not pending and not line.strip():
            continue
        first = first if pending else number
        pending.append(line)
        code, complete = _code("\n".join(pending))
        if complete:
            found.append(Command(first, code.strip()))
            pending = []
    if pending:
        problems.append(f"{block.path}:{first}: a quote or a `\\` is left open to the end")
    if problems:
        raise DocsError(problems)
    return found


def _read_comment(
    line: str, found: list[Command], expecting: bool, where: str, problems: list[str]
) -> bool:
    """Take a comment line of a block: a `# ->` line starts the promise of the command
    above, and lines indented past the `#` right after it continue it. Whether the next
    line may continue a promise."""
    start = _EXPECTATION.match(line)
    more = _CONTINUATION.match(line) if expecting else None
    if start is None and more is None:
        return False
    if not found:
        problems.append(f"{where}: `# ->` follows no command")
        return False
    command = found[-1]
    if start is not None and command.expectation is not None:
        problems.append(f"{where}: a second `# ->` for one command: continue the first")
        return False
    matched = start or more
    assert matched is not None
    before = command.expectation.written if command.expectation else ""
    written = f"{before} {matched['shown'].strip()}".strip()
    found[-1] = Command(command.line, command.code, Expectation(written))
    return True


def _code(text: str) -> tuple[str, bool]:
    """`text` without its comments, and whether bash would take it as a whole command:
    no quote left open, no trailing backslash continuing it."""
    kept: list[str] = []
    quote: str | None = None
    index = 0
    while index < len(text):
        char = text[index]
        if quote is None and char == "#" and (index == 0 or text[index - 1] in " \t\n;|&("):
            end = text.find("\n", index)
            index = len(text) if end < 0 else end
            continue
        if char == "\\" and quote != "'":
            kept.append(text[index : index + 2])
            index += 2
            continue
        if char in "'\"" and quote in (None, char):
            quote = None if quote else char
        kept.append(char)
        index += 1
    code = "".join(kept)
    return code, quote is None and not code.rstrip(" \t").endswith("\\")


def without_optional(code: str) -> str:
    """`code` with its synopsis's optional parts (`[--json]`, `[-n 10]`) left out, as the
    simplest command the text shows; brackets inside quotes (JSON) stay."""
    return "".join(part if quoted else _OPTIONAL.sub("", part) for part, quoted in _quoting(code))


def _quoting(code: str) -> Iterable[tuple[str, bool]]:
    """`code` in pieces, each inside quotes or not."""
    start = 0
    quote: str | None = None
    for index, char in enumerate(code):
        escaped = index > 0 and code[index - 1] == "\\" and quote != "'"
        if char in "'\"" and quote in (None, char) and not escaped:
            if quote is None:
                yield code[start:index], False
                start, quote = index, char
            else:
                yield code[start : index + 1], True
                start, quote = index + 1, None
    yield code[start:], quote is not None


def shows(output: str, shown: str) -> bool:
    """Whether `output` shows `shown`: its pieces between `...` appear in order, and what
    each `...` skips has its brackets balanced, so `[{"name": "Mug", ...` means the
    first element is the Mug, not any. Whitespace is not significant (JSON printed
    compact or indented reads the same)."""
    text = _squeezed(output)
    pieces = [piece for piece in (_squeezed(part) for part in shown.split("...")) if piece]
    return bool(pieces) and _pieces_follow(text, pieces, 0, anywhere=True)


def _squeezed(text: str) -> str:
    return re.sub(r"\s+", "", text)


def _pieces_follow(text: str, pieces: list[str], start: int, anywhere: bool) -> bool:
    position = text.find(pieces[0], start)
    while position >= 0:
        if anywhere or _balanced(text[start:position]):
            after = position + len(pieces[0])
            if len(pieces) == 1 or _pieces_follow(text, pieces[1:], after, anywhere=False):
                return True
        position = text.find(pieces[0], position + 1)
    return False


def _balanced(text: str) -> bool:
    opened: list[str] = []
    for char in text:
        if char in "{[":
            opened.append(char)
        elif char in _CLOSERS and (not opened or opened.pop() != _CLOSERS[char]):
            return False
    return not opened


@dataclass(frozen=True)
class Placeholder:
    """A word the text leaves for the reader to fill from what an earlier command
    printed."""

    name: str
    found_in: str
    """Where a reader finds it, for the table and for the failure when none was printed."""
    find: Callable[[str], str | None]
    """Its value in one command's output, or None."""


def _match(pattern: str, flags: int = 0) -> Callable[[str], str | None]:
    compiled = re.compile(pattern, flags)

    def find(output: str) -> str | None:
        found = compiled.search(output)
        return found[1] if found else None

    return find


def _first_instance(key: str) -> Callable[[str], str | None]:
    """`key` of the first instance in `meshctl status --json`'s output."""

    def find(output: str) -> str | None:
        try:
            state = json.loads(output)
        except json.JSONDecodeError:
            return None
        instances = state.get("instances") if isinstance(state, dict) else None
        return str(instances[0][key]) if instances and key in instances[0] else None

    return find


PLACEHOLDERS = (
    Placeholder("PRODUCT_ID", 'the product a command printed: {"product": {"id": ...',
                _match(r'"product":\s*\{\s*"id":\s*"([^"]+)"')),
    Placeholder("ORDER_ID", 'the order a command printed: {"order": {"id": ...',
                _match(r'"order":\s*\{\s*"id":\s*"([^"]+)"')),
    Placeholder("APP_PORT", "the APP column of the first instance in `meshctl status`",
                _match(r"^\S+ +\S+-\d+ +\d+ +\d+ +127\.0\.0\.1:(\d+) ", re.M)),
    Placeholder("TRACE_ID", "the first line of `meshctl trace`: `trace <id>: N spans`",
                _match(r"^trace ([0-9a-f]{32}):", re.M)),
    Placeholder("METRICS_PORT", "`metrics_port` of the first instance in `meshctl status "
                "--json`", _first_instance("metrics_port")),
    Placeholder("ADMIN_SOCKET", "`admin_socket` of the first instance in `meshctl status "
                "--json`", _first_instance("admin_socket")),
    Placeholder("KEY_ID", "the ID column of `meshctl keys list`",
                _match(r"^([0-9a-f]{16}) +\S", re.M)),
    Placeholder("ETAG", "the `etag:` header of a response printed with its headers",
                _match(r"^etag:\s*(\S+)", re.M | re.I)),
)  # fmt: skip


class Unfilled(AssertionError):
    """A placeholder that no earlier command printed a value for."""


def filled(code: str, outputs: Sequence[str]) -> str:
    """`code` with each placeholder replaced by its value in the latest output that
    shows one, as a reader looks back up the terminal."""
    for placeholder in PLACEHOLDERS:
        word = re.compile(rf"(?<![\w${{]){placeholder.name}(?!\w)")
        if word.search(code):
            code = word.sub(_literally(_latest(placeholder, outputs)), code)
    return code


def _literally(value: str) -> Callable[[re.Match[str]], str]:
    """A replacement that `re.sub` takes as it is (a value may hold a backslash)."""
    return lambda _: value


def _latest(placeholder: Placeholder, outputs: Sequence[str]) -> str:
    for output in reversed(outputs):
        value = placeholder.find(output)
        if value is not None:
            return value
    raise Unfilled(
        f"{placeholder.name}: no earlier command printed one (a reader takes it from "
        f"{placeholder.found_in})"
    )


#: meshctl's commands that act on a running mesh's run directory, and so take the test's.
RUN_DIR_COMMANDS = (
    "alerts", "certs", "dlq", "down", "events", "keys", "logs", "rollout", "status",
    "token", "trace", "traces",
)  # fmt: skip
#: meshctl's commands that read only the checkout.
CHECKOUT_COMMANDS = ("proto",)


@dataclass(frozen=True)
class ThrowawayMesh:
    """Where the docs' fixed places are in the test: the run directory for `.mesh/`, the
    edge's ports for 8080 and 8443, and a meshctl that uses them."""

    run_dir: Path
    edge_port: int
    https_port: int
    meshctl: Path
    """The script that stands for `.venv/bin/meshctl` (`meshctl_script`)."""

    def relocated(self, code: str) -> str:
        code = re.sub(r"(?<![\w/.])\.venv/bin/meshctl\b", shlex.quote(str(self.meshctl)), code)
        code = re.sub(r"\b(127\.0\.0\.1|localhost):8080\b", rf"\g<1>:{self.edge_port}", code)
        code = re.sub(r"\b(127\.0\.0\.1|localhost):8443\b", rf"\g<1>:{self.https_port}", code)
        return re.sub(r"(?<![\w/.])\.mesh/", f"{self.run_dir}/", code)

    def meshctl_script(self, real: Path) -> str:
        """A script that runs the `real` meshctl on this mesh: with `--run-dir` after every
        command that takes one (argparse keeps the last, so it wins over the block's
        own), the edge's ports after `up`, and refusing any command it does not know,
        which could otherwise reach a mesh of the developer's own."""
        meshctl, run_dir = shlex.quote(str(real)), shlex.quote(str(self.run_dir))
        ports = f"--edge-port {self.edge_port} --https-port {self.https_port}"
        return (
            "#!/usr/bin/env bash\n"
            "# meshctl as tests/integration/test_docs.py runs the docs' commands.\n"
            'case "$1" in\n'
            f'  up) exec {meshctl} "$@" --run-dir {run_dir} {ports} ;;\n'
            f'  {"|".join(RUN_DIR_COMMANDS)}) exec {meshctl} "$@" --run-dir {run_dir} ;;\n'
            f'  {"|".join(CHECKOUT_COMMANDS)}) exec {meshctl} "$@" ;;\n'
            '  *) echo "the docs test runs no \\`meshctl $1\\`" >&2; exit 2 ;;\n'
            "esac\n"
        )


def starts_the_mesh(block: Block) -> bool:
    """Whether the block starts the mesh itself (`meshctl up`), so begins without one."""
    return any(re.search(r"\bmeshctl\s+up\b", command.code) for command in commands(block))


@dataclass(frozen=True)
class Ran:
    returncode: int
    output: str
    """stdout and stderr together, as the reader's terminal shows them."""
    timed_out: bool = False


#: Before every command: a curl that fails on an HTTP error (its body still printed),
#: defined before `set -a` so that it stays in this shell and the scripts a block runs
#: keep their own curl; then every variable a command sets is exported, for the next, and
#: a command fails as soon as any part of it does (`a; b`, `a | b`).
_PRELUDE = """\
curl() { command curl --fail-with-body "$@"; }
set -a -e -o pipefail
trap 'env -0 > "$DOCS_VARIABLES"' EXIT
"""
#: Variables of bash's own, never carried from one command to the next.
_BASH_OWN = frozenset({"_", "PWD", "OLDPWD", "SHLVL", "DOCS_VARIABLES"})


@dataclass
class Shell:
    """One reader's terminal: each command runs in bash from `cwd`, with the variables
    the commands before it set."""

    cwd: Path
    variables: dict[str, str] = field(default_factory=dict)

    def run(self, code: str, timeout: float) -> Ran:
        with tempfile.NamedTemporaryFile(prefix="docs-variables-") as after:
            environment = {**self.variables, "DOCS_VARIABLES": after.name}
            ran = _bash(_PRELUDE + code + "\n", environment, self.cwd, timeout)
            carried = Path(after.name).read_bytes()
        if carried:
            self.variables = _variables(carried)
        return ran


def _variables(dump: bytes) -> dict[str, str]:
    pairs = (entry.decode(errors="replace").partition("=") for entry in dump.split(b"\0"))
    return {
        name: value
        for name, _, value in pairs
        if name and name not in _BASH_OWN and not name.startswith("BASH_FUNC_")
    }


def _bash(script: str, environment: dict[str, str], cwd: Path, timeout: float) -> Ran:
    """bash running `script` in a session of its own, so that a command past its time
    is ended with every process it started."""
    with subprocess.Popen(
        ["bash", "-c", script], cwd=cwd, env=environment, stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    ) as process:  # fmt: skip
        try:
            output, _ = process.communicate(timeout=max(timeout, 0.1))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            output, _ = process.communicate()
            return Ran(-signal.SIGKILL, output.decode(errors="replace"), timed_out=True)
    return Ran(process.returncode, output.decode(errors="replace"))


def reader_environment(environment: dict[str, str], venv: Path) -> dict[str, str]:
    """`environment` as a new user's shell has it: the virtual environment not
    activated, so a block that says `meshctl` where it means `.venv/bin/meshctl` fails."""
    path = [entry for entry in environment.get("PATH", "").split(os.pathsep)
            if entry and Path(entry) != venv / "bin"]  # fmt: skip
    kept = {name: value for name, value in environment.items() if name != "VIRTUAL_ENV"}
    return {**kept, "PATH": os.pathsep.join(path)}


def until_shown(
    run: Callable[[], Ran], shown: str, within: float, interval: float = 0.5
) -> tuple[Ran, bool]:
    """Run again what a reader waits on until its output shows `shown` or `within`
    seconds pass; the last run, and whether it showed it."""
    deadline = time.monotonic() + within
    while True:
        ran = run()
        if ran.returncode == 0 and shows(ran.output, shown):
            return ran, True
        if time.monotonic() >= deadline:
            return ran, False
        time.sleep(interval)
