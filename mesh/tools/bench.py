"""`meshctl bench`: what the mesh costs a request, measured on this machine.

One invocation starts a mesh of its own (`mesh.tools.trial`: mesh.yaml with the edge's rate
limit lifted, catalog admitting every call the load keeps in flight, and tracing sampled
at `--sampling` percent), stores one product and calls the same cheap RPC, catalog's
GetProduct, along six paths:

    direct     the app's own port: no Envoy
    sidecar    catalog's inbound listener: mTLS into its sidecar, speaking as orders
    mesh       orders' outbound listener: orders' sidecar -> mTLS -> catalog's sidecar -> app
    edge-grpc  the edge, native gRPC: edge -> mTLS -> catalog's sidecar -> app
    edge-rest  the edge, REST/JSON (GET /v1/products/ID), transcoded to that same call;
               sent with `Cache-Control: no-store`, which takes it past the edge's cache
    edge-cached  the same GET without it: answered from the edge's cache (mesh.yaml's
               `edge.cache`), catalog reached once per max-age

Every path gets three runs: one caller (the latency a hop adds), `--concurrency` callers
(throughput) and an open loop at one rate for every path, by default half the slowest
path's throughput (latency under the same load, free of coordinated omission; see
`mesh.tools.loadgen`). A run reports requests/s, p50/p90/p99, errors, the CPU time per request
of the Envoys on the path, of the app and of the load generator (from /proc), and the
Envoys' memory. The machine is shared by all of them, so what compares across runs and
machines is the ratio against the direct path in the same invocation, which the table
prints beside every figure; `bench.json` keeps everything and `bench.png` draws it, with
how the edge's cache answered meanwhile (its hits and misses).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import platform
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc

from mesh.control import local as control
from mesh.control import procstat
from mesh.control.binaries import find_binary
from mesh.control.envoy import stats
from mesh.tools import loadgen, trial
from mesh.tools.trial import say
from shop.catalog.v1 import catalog_service_pb2 as catalog_pb

GET_PRODUCT = "/shop.catalog.v1.CatalogService/GetProduct"
#: The identity the sidecar path speaks as: one whose calls catalog's sidecar admits.
CALLER = "orders"
CALLEE = "catalog"
PATHS = ("direct", "sidecar", "mesh", "edge-grpc", "edge-rest", "edge-cached")
CALL_TIMEOUT_SECONDS = 10.0
#: Before the first run: wait up to this long until fewer than QUIET_CORES are busy.
SETTLE_TIMEOUT_SECONDS = 20.0
QUIET_CORES = 0.5
#: Paths take turns in slices this long, so a disturbance hits all of them alike.
SLICE_SECONDS = 1.0
LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class Options:
    output: Path
    duration: float = 10.0
    requests: int | None = None
    concurrency: int = 16
    rate: float | None = None
    """Calls per second of the open loops; None: half the slowest path's throughput."""
    sampling: float = 1.0
    warmup: float = 1.0
    paths: tuple[str, ...] = PATHS
    pin: bool = True
    """Run the load generator on a CPU of its own (see `split_cpus`)."""


@dataclass(frozen=True)
class BenchPath:
    """One way to the same RPC, and the processes a request passes on it."""

    name: str
    title: str
    hops: int
    """Envoys between the caller and the app."""
    envoys: tuple[int, ...]
    apps: tuple[int, ...]
    connect: Callable[[], contextlib.AbstractAsyncContextManager[loadgen.Call]]
    check: Callable[[bytes], None]
    """Raises unless an answer is the stored product (checked once per connection)."""


@dataclass
class Measured:
    """One run of one path, with what the processes on it spent."""

    path: BenchPath
    load: str
    run: loadgen.Run
    envoy_cpu: float
    app_cpu: float
    client_cpu: float
    busy_cores: float
    envoy_rss_kib: int
    ratios: dict[str, float | None] = field(default_factory=dict)

    def merged(self, other: Measured) -> Measured:
        """This and a later slice of the same path and load, as one run."""
        run = loadgen.Run(
            mode=self.run.mode,
            seconds=self.run.seconds + other.run.seconds,
            latencies=self.run.latencies + other.run.latencies,
            errors=self.run.errors + other.run.errors,
            dropped=self.run.dropped + other.run.dropped,
            max_lag=max(self.run.max_lag, other.run.max_lag),
        )
        seconds = run.seconds or 1.0
        return Measured(
            path=self.path,
            load=self.load,
            run=run,
            envoy_cpu=self.envoy_cpu + other.envoy_cpu,
            app_cpu=self.app_cpu + other.app_cpu,
            client_cpu=self.client_cpu + other.client_cpu,
            busy_cores=(self.busy_cores * self.run.seconds + other.busy_cores * other.run.seconds)
            / seconds,
            envoy_rss_kib=other.envoy_rss_kib,
        )

    def per_request_us(self, seconds: float) -> float | None:
        return round(seconds / self.run.completed * 1e6, 1) if self.run.completed else None

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path.name,
            "title": self.path.title,
            "hops": self.path.hops,
            "load": self.load,
            **self.run.summary(),
            "envoy_cpu_us_per_request": self.per_request_us(self.envoy_cpu),
            "app_cpu_us_per_request": self.per_request_us(self.app_cpu),
            "client_cpu_us_per_request": self.per_request_us(self.client_cpu),
            "machine_busy_cores": round(self.busy_cores, 2),
            "envoy_rss_mib": round(self.envoy_rss_kib / 1024, 1),
            "ratios": self.ratios,
        }


# -- the paths --------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def _grpc_calls(channel: grpc.aio.Channel, request: bytes) -> AsyncIterator[loadgen.Call]:
    async with channel:
        # No serializers: the request is encoded once, and answers are left as bytes, so
        # the generator spends nothing on protobuf.
        method: Any = channel.unary_unary(GET_PRODUCT)

        async def call() -> Any:
            return await method(request, timeout=CALL_TIMEOUT_SECONDS)

        yield call


@contextlib.asynccontextmanager
async def _rest_calls(
    port: int, path: str, headers: dict[str, str] | None = None
) -> AsyncIterator[loadgen.Call]:
    connections = loadgen.HttpConnections(LOOPBACK, port)
    request = loadgen.http_request("GET", path, f"{LOOPBACK}:{port}", headers)
    try:
        yield lambda: connections.send(request)
    finally:
        await connections.close()


def paths(mesh: trial.TrialMesh, product_id: str) -> dict[str, BenchPath]:
    """The six paths to GetProduct(product_id) in `mesh`."""
    callee = mesh.instances(CALLEE)
    caller = mesh.instances(CALLER)[0]
    edge = mesh.edge
    request = catalog_pb.GetProductRequest(id=product_id).SerializeToString()
    apps = tuple(i["app_pid"] for i in callee)
    callee_sidecars = tuple(i["sidecar_pid"] for i in callee)
    edge_port = int(edge["url"].rsplit(":", 1)[1])
    rest_path = f"/v1/products/{product_id}"

    def grpc_answer(answer: bytes) -> None:
        found = catalog_pb.GetProductResponse.FromString(answer).product.id
        if found != product_id:
            raise control.ControlError(f"GetProduct answered product {found!r}")

    def rest_answer(answer: bytes) -> None:
        found = json.loads(answer)["product"]["id"]
        if found != product_id:
            raise control.ControlError(f"GET /v1/products answered product {found!r}")

    def plaintext(port: int) -> Callable[[], contextlib.AbstractAsyncContextManager[Any]]:
        return lambda: _grpc_calls(grpc.aio.insecure_channel(f"{LOOPBACK}:{port}"), request)

    def mutual_tls() -> contextlib.AbstractAsyncContextManager[Any]:
        pki = mesh.pki()
        cert, key = pki.leaf_paths(caller["instance"])
        credentials = grpc.ssl_channel_credentials(
            root_certificates=pki.ca_path.read_bytes(),
            private_key=key.read_bytes(),
            certificate_chain=cert.read_bytes(),
        )
        channel = grpc.aio.secure_channel(
            f"{LOOPBACK}:{callee[0]['inbound_port']}",
            credentials,
            options=[("grpc.ssl_target_name_override", pki.service_dns_name(CALLEE))],
        )
        return _grpc_calls(channel, request)

    found = [
        BenchPath("direct", "app port, no Envoy", 0, (), apps[:1],
                  plaintext(callee[0]["app_port"]), grpc_answer),
        BenchPath("sidecar", f"mTLS into {CALLEE}'s sidecar, as {CALLER}", 1,
                  callee_sidecars[:1], apps[:1], mutual_tls, grpc_answer),
        BenchPath("mesh", f"{CALLER}'s sidecar -> mTLS -> {CALLEE}'s sidecar", 2,
                  (caller["sidecar_pid"], *callee_sidecars), apps,
                  plaintext(caller["outbound"][CALLEE]), grpc_answer),
        BenchPath("edge-grpc", f"edge (gRPC) -> mTLS -> {CALLEE}'s sidecar", 2,
                  (edge["pid"], *callee_sidecars), apps, plaintext(edge_port), grpc_answer),
        BenchPath("edge-rest", f"edge (REST/JSON, transcoded) -> mTLS -> {CALLEE}'s sidecar", 2,
                  (edge["pid"], *callee_sidecars), apps,
                  lambda: _rest_calls(edge_port, rest_path, trial.UNCACHED), rest_answer),
        BenchPath("edge-cached", "edge (REST/JSON) answering from its cache", 1,
                  (edge["pid"],), apps, lambda: _rest_calls(edge_port, rest_path), rest_answer),
    ]  # fmt: skip
    return {path.name: path for path in found}


# -- measuring --------------------------------------------------------------------------


def _cpu_of(pids: Sequence[int]) -> float:
    total = 0.0
    for pid in pids:
        usage = procstat.usage(pid)
        if usage is None:
            raise control.ControlError(f"process {pid} of the benchmark's mesh is gone")
        total += usage.cpu_seconds
    return total


async def measure(
    path: BenchPath, load: str, loop: Callable[[loadgen.Call], Awaitable[loadgen.Run]],
    call: loadgen.Call,
) -> Measured:  # fmt: skip
    """Run `loop` on `call`, with the CPU the path's processes and this one spent."""
    envoys, apps = _cpu_of(path.envoys), _cpu_of(path.apps)
    client = time.process_time()
    busy, _ = procstat.machine_cpu_seconds()
    run = await loop(call)
    busy_after, _ = procstat.machine_cpu_seconds()
    rss = sum(u.rss_kib for u in map(procstat.usage, path.envoys) if u is not None)
    return Measured(
        path=path,
        load=load,
        run=run,
        envoy_cpu=_cpu_of(path.envoys) - envoys,
        app_cpu=_cpu_of(path.apps) - apps,
        client_cpu=time.process_time() - client,
        busy_cores=(busy_after - busy) / run.seconds if run.seconds else 0.0,
        envoy_rss_kib=rss,
    )


async def _warm(path: BenchPath, call: loadgen.Call, options: Options) -> None:
    """Connect, check one answer, then run briefly so caches and connections are warm."""
    answer = await call()
    path.check(answer)
    warm = await loadgen.closed_loop(
        call, concurrency=options.concurrency, duration=options.warmup,
        max_requests=options.requests,
    )  # fmt: skip
    if warm.errors:
        raise control.ControlError(f"{path.name}: calls failed while warming up: {warm.errors}")


def fixed_rate(measured: Sequence[Measured], concurrency: int) -> float:
    """Half the slowest path's throughput at `concurrency`, rounded down to 10/s (min 10)."""
    slowest = min(
        m.run.completed / m.run.seconds for m in measured if m.load == f"concurrency {concurrency}"
    )
    return float(max(10, math.floor(slowest / 2 / 10) * 10))


Loop = Callable[[loadgen.Call, float, int | None], Awaitable[loadgen.Run]]
"""A load loop run on a call for a duration, with a budget of calls (None: no budget)."""


def closed(concurrency: int) -> Loop:
    def loop(call: loadgen.Call, seconds: float, budget: int | None) -> Any:
        return loadgen.closed_loop(
            call, concurrency=concurrency, duration=seconds, max_requests=budget
        )

    return loop


def opened(rate: float) -> Loop:
    def loop(call: loadgen.Call, seconds: float, budget: int | None) -> Any:
        return loadgen.open_loop(call, rate=rate, duration=seconds, max_requests=budget)

    return loop


async def interleaved(
    calls: Sequence[tuple[BenchPath, loadgen.Call]], load: str, loop: Loop, options: Options,
    say: Callable[[str], None],
) -> list[Measured]:  # fmt: skip
    """`loop` on every path for `options.duration`, in slices of `SLICE_SECONDS` taken in
    turn, so whatever else the machine does meanwhile falls on every path alike."""
    slices = max(1, math.ceil(options.duration / SLICE_SECONDS))
    seconds = options.duration / slices
    budget = None if options.requests is None else math.ceil(options.requests / slices)
    say(f"  {load}: {len(calls)} paths in turn, {slices} slices of {seconds:g} s each ...")
    found: dict[str, Measured] = {}
    for _ in range(slices):
        for path, call in calls:
            part = await measure(path, load, lambda call: loop(call, seconds, budget), call)
            found[path.name] = found[path.name].merged(part) if path.name in found else part
    return list(found.values())


async def run_paths(found: Sequence[BenchPath], options: Options, say: Callable[[str], None]) -> (
    list[Measured]
):  # fmt: skip
    """Every path at concurrency 1 and `options.concurrency`, then all at one fixed rate."""
    async with contextlib.AsyncExitStack() as stack:
        calls = [(path, await stack.enter_async_context(path.connect())) for path in found]
        for path, call in calls:
            await _warm(path, call, options)
        measured: list[Measured] = []
        for concurrency in dict.fromkeys((1, options.concurrency)):
            load = f"concurrency {concurrency}"
            measured += await interleaved(calls, load, closed(concurrency), options, say)
        rate = options.rate or fixed_rate(measured, options.concurrency)
        measured += await interleaved(calls, f"rate {rate:g}/s", opened(rate), options, say)
    add_ratios(measured)
    return measured


def add_ratios(measured: Sequence[Measured]) -> None:
    """Each run against the direct path's run under the same load (when there is one)."""
    direct = {m.load: m for m in measured if m.path.name == "direct"}
    for m in measured:
        base = direct.get(m.load)
        if base is None:
            continue
        rps, base_rps = m.run.completed / m.run.seconds, base.run.completed / base.run.seconds
        p50, base_p50 = m.run.percentile(0.5), base.run.percentile(0.5)
        p99, base_p99 = m.run.percentile(0.99), base.run.percentile(0.99)
        added = None if p50 is None or base_p50 is None else (p50 - base_p50) * 1000
        m.ratios = {
            "throughput": round(rps / base_rps, 3) if base_rps else None,
            "p50": round(p50 / base_p50, 3) if p50 and base_p50 else None,
            "p99": round(p99 / base_p99, 3) if p99 and base_p99 else None,
            "added_p50_ms": None if added is None else round(added, 3),
            "added_p50_ms_per_hop": (
                None if added is None or not m.path.hops else round(added / m.path.hops, 3)
            ),
        }


# -- reporting --------------------------------------------------------------------------


def _cell(value: Any, suffix: str = "") -> str:
    return (
        "-"
        if value is None
        else f"{value:g}{suffix}"
        if isinstance(value, float)
        else (f"{value}{suffix}")
    )


def table(measured: Sequence[Measured]) -> str:
    """One block per load: each path's figures, with its ratios against direct."""
    header = ("PATH", "HOPS", "REQ/S", "xDIRECT", "P50 MS", "P90 MS", "P99 MS", "xDIRECT P50",
              "+P50 MS/HOP", "ERRORS", "ENVOY US/REQ", "APP US/REQ", "CLIENT US/REQ",
              "ENVOY RSS MIB")  # fmt: skip
    blocks = []
    for load in dict.fromkeys(m.load for m in measured):
        rows = [header]
        for m in (m for m in measured if m.load == load):
            data = m.to_json()
            rows.append((
                m.path.name, str(m.path.hops), _cell(data["requests_per_second"]),
                _cell(m.ratios.get("throughput"), "x"), _cell(data["p50_ms"]),
                _cell(data["p90_ms"]), _cell(data["p99_ms"]), _cell(m.ratios.get("p50"), "x"),
                _cell(m.ratios.get("added_p50_ms_per_hop")),
                _cell(data["errors"]) + (f" +{m.run.dropped} dropped" if m.run.dropped else ""),
                _cell(data["envoy_cpu_us_per_request"]), _cell(data["app_cpu_us_per_request"]),
                _cell(data["client_cpu_us_per_request"]), _cell(data["envoy_rss_mib"]),
            ))  # fmt: skip
        widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
        lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
                 for row in rows]  # fmt: skip
        blocks.append(f"{load}:\n" + "\n".join(lines))
    return "\n\n".join(blocks)


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    model = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as cpuinfo:
        model = next((line.split(":", 1)[1].strip() for line in cpuinfo
                      if line.startswith("model name")), "")  # fmt: skip
    envoy = subprocess.run(
        [find_binary("envoy"), "--version"], capture_output=True, text=True, timeout=30, check=False
    ).stdout.strip()
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "grpcio": grpc.__version__,
        "envoy": envoy.rsplit("version:", 1)[-1].strip(),
    }


def chart(measured: Sequence[Measured], title: str, path: Path) -> Path:
    """Throughput and latency of every path, ratios against direct on the bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    loads = list(dict.fromkeys(m.load for m in measured))
    throughput_load = loads[1] if len(loads) > 2 else loads[0]
    figure, axes = plt.subplots(1, len(loads), figsize=(6 * len(loads), 4.8))
    for axis, load in zip(axes, loads, strict=True):
        runs = [m for m in measured if m.load == load]
        names = [m.path.name for m in runs]
        if load == throughput_load:
            values = [m.run.completed / m.run.seconds for m in runs]
            bars = axis.bar(names, values, color="#4c72b0")
            axis.set_ylabel("requests/s")
            axis.set_title(f"Throughput, {load}")
            labels = [_cell(m.ratios.get("throughput"), "x") for m in runs]
        else:
            p50 = [1000 * (m.run.percentile(0.5) or 0) for m in runs]
            p99 = [1000 * (m.run.percentile(0.99) or 0) for m in runs]
            x = range(len(runs))
            axis.bar([i - 0.2 for i in x], p50, width=0.4, label="p50", color="#55a868")
            bars = axis.bar([i + 0.2 for i in x], p99, width=0.4, label="p99", color="#c44e52")
            axis.set_xticks(list(x), names)
            axis.set_ylabel("milliseconds")
            axis.set_title(f"Latency, {load}")
            axis.legend()
            labels = [_cell(m.ratios.get("p99"), "x") for m in runs]
        axis.bar_label(bars, labels=labels, fontsize=8)
        axis.tick_params(axis="x", labelrotation=20)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def write_results(
    measured: Sequence[Measured], options: Options, saw: dict[str, Any], cached: dict[str, int]
) -> tuple[Path, Path]:
    """bench.json and bench.png; `cached` is how the edge's cache answered during the runs."""
    options.output.mkdir(parents=True, exist_ok=True)
    when = datetime.now(UTC).isoformat(timespec="seconds")
    document = {
        "when": when,
        "machine": saw,
        "settings": {
            "duration_seconds": options.duration,
            "max_requests": options.requests,
            "concurrency": options.concurrency,
            "sampling_percent": options.sampling,
            "rpc": GET_PRODUCT,
        },
        "runs": [m.to_json() for m in measured],
        "edge_cache": cached,
    }
    json_path = options.output / "bench.json"
    json_path.write_text(json.dumps(document, indent=2) + "\n")
    release = saw["envoy"].split("/")[1] if "/" in saw["envoy"] else saw["envoy"]
    title = f"meshctl bench, {when}: {saw['cpus']} CPUs ({saw['cpu_model']}), Envoy {release}"
    return json_path, chart(measured, title, options.output / "bench.png")


def bench_topology(sampling: float, admitted: int | None = None) -> trial.Adjust:
    """mesh.yaml without the edge's rate limit, traced at `sampling` percent, `CALLER`
    granted the RPC the paths call on `CALLEE`; with `admitted`, catalog admits that many
    calls at once instead of its own limit."""

    def adjust(topology: dict[str, Any]) -> None:
        # The edge's token buckets would measure the policy, not the
        # proxy; everything else stays as mesh.yaml has it.
        lifted = {"requests_per_second": 1_000_000, "burst": 10_000_000}
        topology.setdefault("edge", {})["rate_limit"] = dict.fromkeys(
            ("total", "per_client", "anonymous"), lifted
        )
        topology.setdefault("telemetry", {})["sampling_percent"] = sampling
        call = topology["services"][CALLER]["calls"][CALLEE]
        if isinstance(call.get("methods"), list):
            call["methods"] = [*call["methods"], GET_PRODUCT.rsplit("/", 1)[1]]
        if admitted is not None:
            catalog = topology["services"]["catalog"]
            catalog["admission"] = {**catalog.get("admission", {}), "max_in_flight": admitted}

    return adjust


def split_cpus(pin: bool) -> tuple[set[int] | None, set[int] | None]:
    """(the mesh's CPUs, the load generator's): the last CPU for the generator, the rest
    for the mesh, so the generator's own cost never takes CPU from what it measures;
    (None, None) when not pinning or on one CPU."""
    cpus = sorted(os.sched_getaffinity(0))
    if not pin or len(cpus) < 2:
        return None, None
    return set(cpus[:-1]), {cpus[-1]}


def settle(say: Callable[[str], None]) -> None:
    """Wait (a while at most) until the machine is quiet: a mesh that just started still
    opens databases, consumers and connections, and that work would fall on the first
    runs alone."""
    deadline = time.monotonic() + SETTLE_TIMEOUT_SECONDS
    busy, total = procstat.machine_cpu_seconds()
    while time.monotonic() < deadline:
        time.sleep(1.0)
        busy_now, total_now = procstat.machine_cpu_seconds()
        cores = (os.cpu_count() or 1) * (busy_now - busy) / (total_now - total)
        if cores < QUIET_CORES:
            return
        busy, total = busy_now, total_now
    say(f"note: the machine is still busy ({cores:.2f} cores) before the first run")


def bench(root: Path, run_dir: Path, options: Options) -> int:
    """`meshctl bench`: see the module docstring."""
    unknown = sorted(set(options.paths) - set(PATHS))
    if unknown:
        raise control.ControlError(f"unknown paths {unknown}; choose from {', '.join(PATHS)}")
    other = control.running_state(root / ".mesh")
    if other is not None:
        say("note: the mesh of .mesh/ is running and shares this machine's CPUs")
    mesh_cpus, generator_cpus = split_cpus(options.pin)
    # Every call the load keeps in flight admitted: the bench measures what a hop costs,
    # not catalog's admission limit (`meshctl chaos overload` measures that).
    adjust = bench_topology(
        options.sampling, admitted=max(options.concurrency, loadgen.MAX_OUTSTANDING)
    )
    with trial.started(root, run_dir, adjust, say, mesh_cpus) as mesh:
        found = paths(mesh, mesh.stocked_product(10))
        chosen = [found[name] for name in PATHS if name in options.paths]
        if generator_cpus is not None:
            os.sched_setaffinity(0, generator_cpus)
            mesh_on, load_on = sorted(mesh_cpus or ()), sorted(generator_cpus)
            say(f"the mesh runs on CPUs {mesh_on}, the load generator on {load_on}")
        say(f"measuring {len(chosen)} paths, {options.duration:g} s per run:")
        settle(say)
        before = stats.cache_events(mesh.edge["admin_socket"])
        measured = asyncio.run(run_paths(chosen, options, say))
        after = stats.cache_events(mesh.edge["admin_socket"])
    cached = {event: count - before.get(event, 0) for event, count in after.items()}
    json_path, png_path = write_results(measured, options, machine(), cached)
    print(table(measured))
    if cached:
        hits, misses = cached.get("hit", 0), cached.get("miss", 0)
        print(f"\nthe edge's cache meanwhile: {hits} hits, {misses} misses")
    print(f"\nwrote {json_path} and {png_path}")
    return 0
