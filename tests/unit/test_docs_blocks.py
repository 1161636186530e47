"""How the docs test reads the documentation (tests/support/docs.py), without a mesh:
which fences are commands and which marks it refuses, how a block divides into
commands and promises, how placeholders are filled, how the docs' fixed places become
the test's, and one terminal's commands in bash. The last tests read the real docs, so
a fence marked wrongly fails here, in seconds."""

from __future__ import annotations

import http.server
import json
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.docs import (
    PLACEHOLDERS,
    Block,
    DocsError,
    Ran,
    Shell,
    ThrowawayMesh,
    Unfilled,
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

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = documents(ROOT)


def shell_block(body: str) -> Block:
    return Block("GUIDE.md", 10, "sh", body)


# Which fences are commands, and their marks.


def test_shell_fences_run_unless_marked_and_other_languages_are_no_commands() -> None:
    found = blocks(
        "```sh\nls\n```\n\n<!-- not run: needs a Docker engine -->\n```bash\ndocker ps\n```\n"
        "```yaml\na: 1\n```\n```text\n$ ls\n```\n",
        "GUIDE.md",
    )
    assert [(block.line, block.is_shell, block.not_run) for block in found] == [
        (1, True, None),
        (6, True, "needs a Docker engine"),
        (9, False, None),
        (12, False, None),
    ]
    assert found[1].body == "docker ps"


def test_a_marker_may_run_over_several_lines() -> None:
    [block] = blocks("<!-- not run: a long\n     reason -->\n```sh\nls\n```\n", "GUIDE.md")
    assert block.not_run == "a long reason"


@pytest.mark.parametrize(
    ("markdown", "problem"),
    [
        ("text\n```\nls\n```\n", "GUIDE.md:2: a fence without a language"),
        ("<!-- not run: -->\n```sh\nls\n```\n", "GUIDE.md:2: `not run:` needs the reason"),
        ("<!-- skip -->\n```sh\nls\n```\n", "GUIDE.md:2: unknown marker `<!-- skip -->`"),
        ("<!-- not run: x -->\n```yaml\na: 1\n```\n", "marks a yaml block, never run"),
        ("```sh\nls\n", "GUIDE.md:1: this fence is never closed"),
    ],
)
def test_a_fence_the_test_cannot_place_is_refused_with_its_line(
    markdown: str, problem: str
) -> None:
    with pytest.raises(DocsError) as refused:
        blocks(markdown, "GUIDE.md")
    assert problem in str(refused.value)


def test_every_problem_of_a_document_is_told_at_once() -> None:
    with pytest.raises(DocsError) as refused:
        blocks("```\na\n```\n<!-- no -->\n```sh\nls\n```\n", "GUIDE.md")
    assert len(refused.value.problems) == 2


# Commands and what they promise.


def test_a_command_goes_on_while_a_quote_or_a_backslash_is_open() -> None:
    found = commands(
        shell_block(
            "curl -s localhost:8080/v1/products -d \\\n"
            '  \'{"product": {"name": "Mug",\n'
            "    \"weightGrams\": 300}}'   # the mesh CA's: an apostrophe in a comment\n"
            "\n"
            'echo "#not a comment" done  # but this is\n'
        )
    )
    assert [command.line for command in found] == [11, 15]
    assert found[0].code.endswith('"weightGrams": 300}}\'')
    assert found[1].code == 'echo "#not a comment" done'


def test_a_promise_is_the_command_above_s_and_goes_on_on_indented_comment_lines() -> None:
    [first, second] = commands(
        shell_block(
            'echo one\n# -> once the saga has run: {"status": "DONE",\n'
            '#      "history": [...]}\n# a remark, not a promise\necho two\n# -> two\n'
        )
    )
    assert first.expectation is not None
    assert first.expectation.once == "the saga has run"
    assert first.expectation.shown == '{"status": "DONE", "history": [...]}'
    assert second.expectation is not None
    assert (second.expectation.once, second.expectation.shown) == (None, "two")


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ("# -> something\necho\n", "GUIDE.md:11: `# ->` follows no command"),
        ("echo '{\n", "GUIDE.md:11: a quote or a `\\` is left open"),
        ("echo\n# -> a\n# -> b\n", "GUIDE.md:13: a second `# ->` for one command"),
    ],
)
def test_a_block_that_does_not_divide_into_commands_is_refused(body: str, problem: str) -> None:
    with pytest.raises(DocsError, match=re.escape(problem)):
        commands(shell_block(body))


def test_a_synopsis_runs_without_its_optional_words_and_json_keeps_its_brackets() -> None:
    assert without_optional("meshctl traces --slow [-n 10] [--json]").split() == [
        "meshctl", "traces", "--slow",
    ]  # fmt: skip
    json_body = """curl -d '{"lines": [{"q": 1}], "tags": ["a"]}' [--verbose]"""
    assert (
        without_optional(json_body).rstrip() == """curl -d '{"lines": [{"q": 1}], "tags": ["a"]}'"""
    )


def test_a_block_that_runs_meshctl_up_starts_the_mesh_itself() -> None:
    assert starts_the_mesh(shell_block(".venv/bin/meshctl up --detach\n"))
    assert not starts_the_mesh(shell_block(".venv/bin/meshctl status  # not meshctl up\n"))


# What an output shows.


ORDER = (
    '{"order":{"id":"o-1","status":"ORDER_STATUS_CONFIRMED","history":['
    '{"name":"OrderPlaced","time":"t1"},{"name":"OrderConfirmed","time":"t2"}]}}'
)


def test_whitespace_is_not_significant_and_an_ellipsis_stands_for_elided_values() -> None:
    assert shows(ORDER, '"status": "ORDER_STATUS_CONFIRMED", "history": [\n  {"name": "Order')
    assert shows(ORDER, '[{"name": "OrderPlaced", ...}, {"name": "OrderConfirmed", ...}]')
    assert not shows(ORDER, '"status": "ORDER_STATUS_CANCELLED"')
    assert not shows(ORDER, '{"name": "OrderConfirmed", ...}, {"name": "OrderPlaced"')


def test_an_ellipsis_never_skips_out_of_the_value_it_is_in() -> None:
    results = '{"results":[{"id":"1","name":"Tea","score":0.5},{"id":"2","name":"Mug"}]}'
    assert shows(results, '{"results": [{"id": "...", "name": "Tea", ...}, ...]}')
    assert not shows(results, '{"results": [{"id": "...", "name": "Mug"')
    assert shows(results, '"results": [..., {"id": "...", "name": "Mug"}]')


def test_an_empty_promise_shows_nothing() -> None:
    assert not shows("anything", "...")


# Placeholders.


def test_a_placeholder_takes_the_latest_output_that_shows_one() -> None:
    outputs = ['{"product": {"id": "p-old"}}', "no product here", '{"product":{"id":"p-new"}}']
    code = """curl -d '{"productId": "PRODUCT_ID"}' $PRODUCT_ID"""
    assert filled(code, outputs) == """curl -d '{"productId": "p-new"}' $PRODUCT_ID"""


def test_a_placeholder_no_earlier_command_printed_fails_naming_where_to_look() -> None:
    with pytest.raises(Unfilled, match=r"ORDER_ID: no earlier command printed one .*\"order\""):
        filled("curl localhost:8080/v1/orders/ORDER_ID", ['{"product": {"id": "p"}}'])


def test_placeholders_are_read_from_tables_json_and_headers_as_a_reader_reads_them() -> None:
    status_table = (
        "SERVICE   INSTANCE    APP PID  SIDECAR PID  APP              INBOUND\n"
        "identity  identity-0  10468    10308        127.0.0.1:36119  127.0.0.1:41359\n"
    )
    status_json = json.dumps(
        {"edge": {"url": "x"}, "instances": [{"metrics_port": 9464, "admin_socket": "/s"}]}
    )
    outputs = [
        status_table,
        status_json,
        "trace 40814ecd66bf838aedf0a9cfeccbecb2: 28 spans, 179.41 ms, 0 errors\n",
        "ID                CONSUMER  PLAN\ne48b0bf2c1420c79  acme      free\n",
        'HTTP/1.1 200 OK\nETag: W/"lV8y"\ncache-control: public\n',
    ]
    code = "APP_PORT METRICS_PORT ADMIN_SOCKET TRACE_ID KEY_ID ETAG"
    assert filled(code, outputs).split() == [
        "36119", "9464", "/s", "40814ecd66bf838aedf0a9cfeccbecb2", "e48b0bf2c1420c79",
        'W/"lV8y"',
    ]  # fmt: skip


def test_every_placeholder_says_where_a_reader_finds_it() -> None:
    assert all(placeholder.found_in for placeholder in PLACEHOLDERS)
    assert len({placeholder.name for placeholder in PLACEHOLDERS}) == len(PLACEHOLDERS)


# The test's mesh in place of the docs' fixed places.


def places(tmp_path: Path) -> ThrowawayMesh:
    return ThrowawayMesh(tmp_path / "run", 40001, 40002, tmp_path / "meshctl")


def test_the_docs_fixed_places_become_the_test_s_mesh(tmp_path: Path) -> None:
    code = (
        "CA=.mesh/pki/ca/ca.pem; curl localhost:8080/x 127.0.0.1:8443/y; "
        ".venv/bin/meshctl status; other.mesh/ /opt/.venv/bin/meshctl"
    )
    assert places(tmp_path).relocated(code) == (
        f"CA={tmp_path}/run/pki/ca/ca.pem; curl localhost:40001/x 127.0.0.1:40002/y; "
        f"{tmp_path}/meshctl status; other.mesh/ /opt/.venv/bin/meshctl"
    )


def test_meshctl_in_the_docs_runs_on_the_test_s_mesh_and_nothing_else(tmp_path: Path) -> None:
    """With a stand-in for the real meshctl that prints what it was given."""
    real = tmp_path / "real-meshctl"
    real.write_text('#!/usr/bin/env bash\necho "$@"\n')
    real.chmod(0o755)
    mesh = places(tmp_path)
    mesh.meshctl.write_text(mesh.meshctl_script(real))
    mesh.meshctl.chmod(0o755)
    shell = Shell(tmp_path)
    run_dir = f"--run-dir {tmp_path}/run"
    status = shell.run(f"{mesh.meshctl} status --run-dir /tmp/m", timeout=10)
    assert status.output.strip() == f"status --run-dir /tmp/m {run_dir}"
    up = shell.run(f"{mesh.meshctl} up --detach", timeout=10)
    assert up.output.strip() == f"up --detach {run_dir} --edge-port 40001 --https-port 40002"
    assert shell.run(f"{mesh.meshctl} proto lint", timeout=10).output.strip() == "proto lint"
    bench = shell.run(f"{mesh.meshctl} bench saga", timeout=10)
    assert (bench.returncode, bench.output.strip()) == (2, "the docs test runs no `meshctl bench`")


# One terminal.


def test_a_command_sees_the_variables_the_commands_before_it_set(tmp_path: Path) -> None:
    shell = Shell(tmp_path, {"PATH": "/usr/bin:/bin"})
    assert shell.run("EDGE=http://127.0.0.1:1 TOKEN=$(echo t-1)", timeout=10).returncode == 0
    assert shell.run('echo "$EDGE $TOKEN"', timeout=10).output == "http://127.0.0.1:1 t-1\n"


@pytest.mark.parametrize("code", ["false | cat", "false; true", "X=$(false)"])
def test_a_command_fails_as_soon_as_a_part_of_it_fails(tmp_path: Path, code: str) -> None:
    assert Shell(tmp_path).run(code, timeout=10).returncode == 1


def test_a_command_past_its_time_is_ended(tmp_path: Path) -> None:
    ran = Shell(tmp_path).run("sleep 30", timeout=0.3)
    assert ran.timed_out


class _NotFound(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b'{"code": 5, "message": "no such product"}'
        self.send_response(404)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the test reads the client's side."""


@pytest.fixture
def not_found_server() -> Iterator[str]:
    """A loopback HTTP server that answers every GET with a 404 and a JSON body."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NotFound)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_curl_fails_on_an_http_error_and_still_prints_its_body(
    tmp_path: Path, not_found_server: str
) -> None:
    ran = Shell(tmp_path).run(f"curl -s {not_found_server}/v1/products/x", timeout=10)
    assert ran.returncode == 22
    assert "no such product" in ran.output
    # A script the command runs keeps its own curl.
    script = Shell(tmp_path).run("bash -c 'type -t curl'", timeout=10)
    assert script.output.strip() == "file"


def test_a_reader_s_shell_has_no_virtual_environment_activated(tmp_path: Path) -> None:
    venv = tmp_path / ".venv"
    environment = {"PATH": f"{venv}/bin:/usr/bin", "VIRTUAL_ENV": str(venv), "HOME": "/h"}
    assert reader_environment(environment, venv) == {"PATH": "/usr/bin", "HOME": "/h"}


def test_a_promise_awaited_is_run_again_until_it_shows() -> None:
    answers = iter(["PENDING", "PENDING", "CONFIRMED"])
    ran, seen = until_shown(lambda: Ran(0, next(answers)), "CONFIRMED", 5, interval=0.01)
    assert (ran.output, seen) == ("CONFIRMED", True)
    ran, seen = until_shown(lambda: Ran(0, "PENDING"), "CONFIRMED", 0.1, interval=0.01)
    assert (ran.output, seen) == ("PENDING", False)


# The real docs.


@pytest.mark.parametrize("document", DOCUMENTS)
def test_every_fence_of_the_docs_is_placed_and_every_shell_block_divides(document: str) -> None:
    for block in blocks((ROOT / document).read_text(), document):
        if block.is_shell:
            assert commands(block), f"{block.where}: a shell block without a command"


def test_the_docs_that_walk_a_new_user_through_the_shop_are_run() -> None:
    """The edge, the saga, search and observability: excepting any of them would leave
    the heart of the README untested."""
    readme = blocks((ROOT / "README.md").read_text(), "README.md")
    run = [block.body for block in readme if block.is_shell and block.not_run is None]
    for command in ("/v1/orders", "/v1/products:search", "meshctl trace ORDER_ID"):
        assert any(command in body for body in run), command
