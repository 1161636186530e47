// The mesh console: the service map with live figures, and the traces behind it.
// Plain JavaScript, no build step and nothing from a CDN: the page works offline.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const NODE = { width: 180, height: 62, column: 250, row: 96, margin: 50 };
const state = { map: null, figures: null };

function element(tag, attributes = {}, text = "") {
  const made = tag.startsWith("svg:")
    ? document.createElementNS(SVG, tag.slice(4))
    : document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) made.setAttribute(name, value);
  if (text) made.textContent = text;
  return made;
}

async function getJson(url) {
  const response = await fetch(url, { headers: { Accept: "application/json" } });
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || `${response.status}`);
  return body;
}

// -- the map -----------------------------------------------------------------------------

function position(node) {
  return {
    x: NODE.margin + node.column * NODE.column,
    y: NODE.margin + node.row * NODE.row,
  };
}

function linkPath(link, source, target) {
  const from = position(source);
  const to = position(target);
  if (link.kind === "event") {
    // Down from a producer to NATS, or up from NATS to a consumer: bottom to top.
    const [x1, y1, x2, y2] = source.kind === "nats"
      ? [from.x + NODE.width / 2, from.y, to.x + NODE.width / 2, to.y + NODE.height]
      : [from.x + NODE.width / 2, from.y + NODE.height, to.x + NODE.width / 2, to.y];
    const middle = (y1 + y2) / 2;
    return { d: `M${x1},${y1} C${x1},${middle} ${x2},${middle} ${x2},${y2}`,
             label: { x: x2 + 6, y: source.kind === "nats" ? y2 + 14 : y1 + 14, anchor: "start" } };
  }
  const x1 = from.x + NODE.width, y1 = from.y + NODE.height / 2;
  const x2 = to.x, y2 = to.y + NODE.height / 2;
  const bend = (x2 - x1) / 2;
  if (target.column - source.column > 1) {
    // Past the columns between, along the gap above the higher of the two rows.
    const gap = Math.min(from.y, to.y) - (NODE.row - NODE.height) / 2;
    return { d: `M${x1},${y1} C${x1 + 40},${y1} ${x1 + 20},${gap} ${x1 + 60},${gap} ` +
                `L${x2 - 60},${gap} C${x2 - 20},${gap} ${x2 - 40},${y2} ${x2},${y2}`,
             label: { x: x2 - 64, y: gap - 4, anchor: "end" } };
  }
  // The label sits near the callee, where the links of one caller have parted.
  return { d: `M${x1},${y1} C${x1 + bend},${y1} ${x2 - bend},${y2} ${x2},${y2}`,
           label: { x: x2 - 8, y: y2 - 6, anchor: "end" } };
}

function drawMap(map) {
  const svg = document.getElementById("graph");
  svg.replaceChildren(arrowHead());
  const byId = Object.fromEntries(map.nodes.map((node) => [node.id, node]));
  const columns = Math.max(...map.nodes.map((n) => n.column)) + 1;
  const rows = Math.max(...map.nodes.map((n) => n.row)) + 1;
  svg.setAttribute("viewBox",
    `0 0 ${2 * NODE.margin + (columns - 1) * NODE.column + NODE.width} ` +
    `${2 * NODE.margin + rows * NODE.row + 60}`);
  const labels = [];
  const into = {};  // labels already at each callee's side, stacked upwards
  for (const link of map.links) {
    const { d, label: at } = linkPath(link, byId[link.source], byId[link.target]);
    if (link.kind === "rpc" && at.anchor === "end" && at.y > byId[link.target].row * NODE.row) {
      const key = `${link.target}:${at.y}`;
      at.y -= 12 * (into[key] || 0);
      into[key] = (into[key] || 0) + 1;
    }
    const group = element("svg:g", { class: `link ${link.kind}`, "data-link": link.id });
    group.append(element("svg:path", { class: "hit", d }));
    group.append(element("svg:path", { class: "line", d, "marker-end": "url(#arrow)" }));
    group.append(element("svg:title", {}, linkTitle(link)));
    const label = element("svg:text", { class: `link-label ${link.kind}`, "data-link": link.id,
                                        x: at.x, y: at.y, "text-anchor": at.anchor },
                          linkLabel(link, null));
    label.append(element("svg:title", {}, linkTitle(link)));
    for (const part of [group, label]) {
      if (link.kind === "rpc") part.addEventListener("click", () => showLinkTraces(link.id));
    }
    svg.append(group);
    labels.push(label);
  }
  for (const node of map.nodes) {
    const { x, y } = position(node);
    const group = element("svg:g", { class: `node ${node.kind} UNKNOWN`, "data-node": node.id,
                                     transform: `translate(${x},${y})` });
    group.append(element("svg:rect", { width: NODE.width, height: NODE.height, rx: 8 }));
    group.append(element("svg:rect", { class: "ring", width: NODE.width, height: NODE.height,
                                       rx: 8 }));
    group.append(element("svg:text", { class: "name", x: 12, y: 22 }, node.id));
    const replicas = node.instances.length ? ` · ${node.instances.length} replica(s)` : "";
    group.append(element("svg:text", { class: "figures", x: 12, y: 40 }, node.kind + replicas));
    group.append(element("svg:text", { class: "figures live", x: 12, y: 55 }, ""));
    node.instances.forEach((instance, index) => {
      const dot = element("svg:circle", { class: "replica UNKNOWN", "data-instance": instance,
                                          cx: NODE.width - 12 - 12 * index, cy: 14, r: 4 });
      dot.append(element("svg:title", {}, instance));
      group.append(dot);
    });
    svg.append(group);
  }
  svg.append(...labels);  // over the nodes, so a long link's label is never hidden
}

function arrowHead() {
  const defs = element("svg:defs");
  const marker = element("svg:marker", { id: "arrow", viewBox: "0 0 10 10", refX: 10, refY: 5,
                                         markerWidth: 10, markerHeight: 10,
                                         markerUnits: "userSpaceOnUse",
                                         orient: "auto-start-reverse" });
  marker.append(element("svg:path", { d: "M0,0 L10,5 L0,10 z", fill: "#8a93a6" }));
  defs.append(marker);
  return defs;
}

function linkTitle(link) {
  return link.kind === "event"
    ? `${link.source} → ${link.target}: ${link.events.join(", ")}`
    : `${link.source} calls ${link.target}`;
}

function linkLabel(link, figures) {
  if (link.kind === "event") {
    return figures && figures.per_second ? `${figures.per_second} ev/s` +
      (figures.error_ratio ? ` · ${percent(figures.error_ratio)} dead` : "") : "";
  }
  return describe(figures, "") + pressure(figures || {});
}

function pressure(figures) {
  const parts = [];
  if (figures.refused_per_second) parts.push(`${figures.refused_per_second} turned away/s`);
  if (figures.backlog) parts.push(`${figures.backlog} events waiting`);
  return parts.length ? ` · ${parts.join(" · ")}` : "";
}

function percent(ratio) {
  return `${(100 * ratio).toFixed(ratio && ratio < 0.01 ? 2 : 1)}%`;
}

function describe(figures, unit) {
  if (!figures) return "no figures yet";
  if (!figures.per_second) return `0${unit}/s`;
  const p99 = figures.p99_ms == null ? "" : ` · p99 ${figures.p99_ms} ms`;
  return `${figures.per_second}${unit}/s · ${percent(figures.error_ratio)}${p99}`;
}

function severity(figures) {
  if (!figures || !figures.per_second) return "";
  if (figures.error_ratio >= 0.05) return "bad";
  return figures.error_ratio > 0 ? "warn" : "ok";
}

function applyFigures(figures) {
  state.figures = figures;
  for (const group of document.querySelectorAll("#graph .link")) {
    const link = state.map.links.find((l) => l.id === group.dataset.link);
    const measured = figures.links[link.id];
    const saturated = measured && measured.saturated ? "saturated" : "";
    group.setAttribute("class", `link ${link.kind} ${severity(measured)} ${saturated}`);
    document.querySelector(`#graph text.link-label[data-link="${link.id}"]`).textContent =
      linkLabel(link, measured);
  }
  for (const group of document.querySelectorAll("#graph .node")) {
    const node = state.map.nodes.find((n) => n.id === group.dataset.node);
    const measured = figures.nodes[node.id] || {};
    const saturated = measured.saturated ? "saturated" : "";
    group.setAttribute("class", `node ${node.kind} ${measured.health || "UNKNOWN"} ${saturated}`);
    const restarts = measured.restarts ? ` · ${measured.restarts} restart(s)` : "";
    const served = node.kind === "service" ? describe(measured, "") : measured.health || "";
    group.querySelector(".live").textContent = served + restarts + pressure(measured);
    for (const dot of group.querySelectorAll(".replica")) {
      const health = (measured.replicas || {})[dot.dataset.instance] || "UNKNOWN";
      dot.setAttribute("class", `replica ${health}`);
      dot.querySelector("title").textContent = `${dot.dataset.instance}: ${health}`;
    }
  }
  const when = new Date(figures.time * 1000).toLocaleTimeString();
  document.getElementById("updated").textContent = `live · ${when}`;
}

function follow() {
  const source = new EventSource("/api/live");
  source.addEventListener("figures", (event) => {
    const figures = JSON.parse(event.data);
    if (figures.time != null) applyFigures(figures);
  });
  source.onerror = () => {
    document.getElementById("updated").textContent = "reconnecting…";
  };
}

// -- traces ------------------------------------------------------------------------------

function fillSearchChoices(map) {
  const services = document.querySelector("#search select[name=service]");
  for (const node of map.nodes.filter((n) => n.kind !== "nats")) {
    services.append(element("option", { value: node.id }, node.id));
  }
  const links = document.querySelector("#search select[name=link]");
  for (const link of map.links.filter((l) => l.kind === "rpc")) {
    links.append(element("option", { value: link.id }, `${link.source} → ${link.target}`));
  }
}

function showLinkTraces(linkId) {
  const form = document.getElementById("search");
  form.reset();
  form.elements.link.value = linkId;
  location.hash = "#traces";
  search();
}

async function search() {
  const form = document.getElementById("search");
  const problem = document.getElementById("search-error");
  problem.hidden = true;
  const traceId = form.elements.trace_id.value.trim();
  if (traceId) return showTrace(traceId);
  const query = new URLSearchParams();
  for (const name of ["order_id", "service", "link", "order"]) {
    const value = form.elements[name].value.trim();
    if (value) query.set(name, value);
  }
  if (form.elements.errors.checked) query.set("errors", "1");
  try {
    const { traces } = await getJson(`/api/traces?${query}`);
    listTraces(traces);
  } catch (failure) {
    problem.textContent = failure.message;
    problem.hidden = false;
  }
}

function listTraces(traces) {
  const body = document.querySelector("#trace-list tbody");
  body.replaceChildren();
  for (const trace of traces) {
    const row = element("tr", { "data-trace": trace.trace_id });
    const started = new Date(trace.start_ns / 1e6).toLocaleTimeString();
    row.append(element("td", {}, started));
    row.append(element("td", {}, `${trace.root_service} ${trace.root_name}`));
    row.append(element("td", {}, `${trace.duration_ms.toFixed(1)} ms`));
    row.append(element("td", {}, String(trace.spans)));
    row.append(element("td", { class: `errors-${Math.min(trace.errors, 1)}` },
                       String(trace.errors)));
    row.append(element("td", {}, trace.trace_id));
    row.addEventListener("click", () => showTrace(trace.trace_id));
    body.append(row);
  }
  if (!traces.length) {
    const row = element("tr");
    row.append(element("td", { colspan: 6 }, "no trace matches"));
    body.append(row);
  }
}

function depthFirst(spans) {
  const ids = new Set(spans.map((s) => s.span_id));
  const children = new Map();
  for (const span of spans) {
    const parent = ids.has(span.parent_span_id) ? span.parent_span_id : "";
    if (!children.has(parent)) children.set(parent, []);
    children.get(parent).push(span);
  }
  const ordered = [];
  const visit = (parent, depth) => {
    const kids = (children.get(parent) || []).sort((a, b) => a.start_ns - b.start_ns);
    for (const span of kids) {
      ordered.push([depth, span]);
      visit(span.span_id, depth + 1);
    }
  };
  visit("", 0);
  return ordered;
}

async function showTrace(traceId) {
  const problem = document.getElementById("search-error");
  let spans;
  try {
    ({ spans } = await getJson(`/api/traces/${encodeURIComponent(traceId)}`));
  } catch (failure) {
    problem.textContent = failure.message;
    problem.hidden = false;
    return;
  }
  const start = Math.min(...spans.map((s) => s.start_ns));
  const end = Math.max(...spans.map((s) => s.end_ns));
  const total = Math.max(end - start, 1);
  document.getElementById("waterfall-title").textContent =
    `trace ${traceId} · ${((end - start) / 1e6).toFixed(1)} ms · ${spans.length} spans`;
  const list = document.getElementById("spans");
  list.replaceChildren();
  for (const [depth, span] of depthFirst(spans)) {
    const row = element("div", { class: `span ${span.status}`, "data-span": span.span_id });
    const label = element("span", { class: "label" }, `${span.service} ${span.name}`);
    label.style.paddingLeft = `${depth}rem`;
    const track = element("span", { class: "track" });
    const bar = element("span", { class: "bar" });
    bar.style.left = `${(100 * (span.start_ns - start)) / total}%`;
    bar.style.width = `${(100 * (span.end_ns - span.start_ns)) / total}%`;
    track.append(bar);
    row.append(label, track,
               element("span", { class: "took" }, `${((span.end_ns - span.start_ns) / 1e6).toFixed(2)} ms`));
    row.addEventListener("click", () => showAttributes(span));
    list.append(row);
  }
  document.getElementById("attributes").hidden = true;
  document.getElementById("waterfall").hidden = false;
}

function showAttributes(span) {
  const shown = {
    service: span.service, instance: span.instance, name: span.name, kind: span.kind,
    status: span.status, status_message: span.status_message, span_id: span.span_id,
    parent_span_id: span.parent_span_id, attributes: span.attributes,
  };
  const box = document.getElementById("attributes");
  box.textContent = JSON.stringify(shown, null, 2);
  box.hidden = false;
}

// -- sagas -------------------------------------------------------------------------------

async function loadSagas() {
  say("sagas-error", "");
  const form = document.getElementById("saga-filter");
  const query = new URLSearchParams({ stuck_after: form.elements.stuck_after.value || "30" });
  let found;
  try {
    found = await getJson(`/api/sagas?${query}`);
  } catch (failure) {
    say("sagas-error", failure.message, true);
    return;
  }
  const shown = form.elements.stuck_only.checked ? found.sagas.filter((s) => s.stuck) : found.sagas;
  const body = document.querySelector("#saga-list tbody");
  body.replaceChildren(...shown.map(sagaRow));
  const stuck = found.sagas.filter((s) => s.stuck).length;
  document.getElementById("sagas-note").textContent =
    `${found.sagas.length} recent saga(s), ${stuck} stuck (pending over ${found.stuck_after} s)`;
}

function sagaRow(saga) {
  const row = element("tr", { class: saga.stuck ? "stuck" : "", "data-order": saga.order_id });
  const order = element("td", { class: "order", title: "its traces" }, saga.order_id);
  order.addEventListener("click", () => {
    const form = document.getElementById("search");
    form.reset();
    form.elements.order_id.value = saga.order_id;
    location.hash = "#traces";
    search();
  });
  row.append(order);
  row.append(element("td", { class: `status-${saga.status}` },
                     saga.stuck ? `${saga.status} (stuck)` : saga.status));
  row.append(element("td", {}, new Date(saga.started * 1000).toLocaleTimeString()));
  row.append(element("td", {}, `${saga.seconds.toFixed(2)} s`));
  const steps = element("td");
  for (const step of saga.steps) {
    const detail = Object.keys(step.detail).length ? JSON.stringify(step.detail) : "";
    steps.append(element("span", { class: "step", title: `${step.producer} · ${detail}` },
                         step.event.replaceAll("_", " ")));
  }
  row.append(steps);
  return row;
}

// -- dead letters ------------------------------------------------------------------------

async function postJson(url) {
  const response = await fetch(url, {
    method: "POST", headers: { "Content-Type": "application/json" }, body: "{}",
  });
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || `${response.status}`);
  return body;
}

function say(id, text, isError = false) {
  const box = document.getElementById(id);
  box.textContent = text;
  box.hidden = !text;
  box.classList.toggle("error", isError);
}

async function loadLetters() {
  say("letters-error", "");
  let letters;
  try {
    ({ dead_letters: letters } = await getJson("/api/dead-letters"));
  } catch (failure) {
    say("letters-error", failure.message, true);
    return;
  }
  const body = document.querySelector("#letter-list tbody");
  body.replaceChildren();
  for (const letter of letters) {
    const row = element("tr", { "data-sequence": letter.sequence });
    row.append(element("td", {}, String(letter.sequence)));
    row.append(element("td", {}, letter.time));
    row.append(element("td", {}, letter.parked_by ? `${letter.parked_by} (outbox)` : letter.consumer));
    row.append(element("td", {}, letter.subject));
    row.append(element("td", {}, letter.reason));
    const cell = element("td");
    const button = element("button", { type: "button", class: "replay" }, "Replay…");
    button.addEventListener("click", () => replayOne(letter));
    cell.append(button);
    row.append(cell);
    body.append(row);
  }
  document.getElementById("letters-note").textContent = `${letters.length} dead letter(s)`;
}

async function replayOne(letter) {
  const writer = letter.parked_by ? `${letter.parked_by}'s outbox` : letter.consumer;
  if (!confirm(`Replay dead letter ${letter.sequence} (${letter.subject}, dead for ${writer})?`)) {
    return;
  }
  let refused = "";
  try {
    await postJson(`/api/dead-letters/${letter.sequence}/replay`);
  } catch (failure) {
    refused = failure.message;
  }
  await loadLetters();
  const note = document.getElementById("letters-note");
  if (refused) say("letters-error", refused, true);
  else note.textContent = `replayed ${letter.sequence}; ${note.textContent}`;
}

async function replayAll() {
  const count = document.querySelectorAll("#letter-list tbody tr").length;
  if (!confirm(`Replay every dead letter that holds up (${count} listed)?`)) return;
  let outcome;
  try {
    outcome = await postJson("/api/dead-letters/replay");
  } catch (failure) {
    say("letters-error", failure.message, true);
    return;
  }
  await loadLetters();
  const left = outcome.left.map((l) => `${l.sequence}: ${l.reason}`).join("; ");
  say("letters-error", left ? `left ${left}` : "", Boolean(left));
  document.getElementById("letters-note").textContent =
    `replayed ${outcome.replayed.length}, left ${outcome.left.length}`;
}

// -- logs --------------------------------------------------------------------------------

const logs = { source: null };

function logLine(text) {
  let fields = null;
  if (text.startsWith("{")) {
    try { fields = JSON.parse(text); } catch (_) { fields = null; }
  }
  const row = element("div", { class: `log-line ${fields ? fields.level : ""}` });
  if (!fields) {
    row.textContent = text;
    return row;
  }
  row.append(document.createTextNode(
    `${fields.time || ""} ${(fields.level || "").padEnd(7)} ${fields.message || ""}` +
    (fields.error ? `\n${fields.error}` : "")));
  if (fields.trace_id) {
    const trace = element("span", { class: "trace", title: "open this trace" },
                          ` trace ${fields.trace_id}`);
    trace.addEventListener("click", () => {
      location.hash = "#traces";
      showTrace(fields.trace_id);
    });
    row.append(trace);
  }
  return row;
}

async function fillInstances() {
  const { instances } = await getJson("/api/logs");
  const select = document.querySelector("#log-filter select[name=instance]");
  select.replaceChildren(...instances.map((name) => element("option", { value: name }, name)));
}

async function showLogs() {
  if (logs.source) logs.source.close();
  say("logs-error", "");
  const form = document.getElementById("log-filter");
  const instance = form.elements.instance.value;
  if (!instance) return;
  const query = new URLSearchParams();
  if (form.elements.level.value) query.set("level", form.elements.level.value);
  if (form.elements.trace_id.value.trim()) query.set("trace_id", form.elements.trace_id.value.trim());
  const box = document.getElementById("log-lines");
  let found;
  try {
    found = await getJson(`/api/logs/${encodeURIComponent(instance)}?${query}`);
  } catch (failure) {
    say("logs-error", failure.message, true);
    return;
  }
  box.replaceChildren(...found.lines.map(logLine));
  box.scrollTop = box.scrollHeight;
  if (!form.elements.follow.checked) return;
  query.set("offset", found.offset);
  logs.source = new EventSource(`/api/logs/${encodeURIComponent(instance)}/follow?${query}`);
  logs.source.addEventListener("line", (event) => {
    const atEnd = box.scrollTop + box.clientHeight >= box.scrollHeight - 4;
    box.append(logLine(JSON.parse(event.data)));
    if (atEnd) box.scrollTop = box.scrollHeight;
  });
}

// -- views -------------------------------------------------------------------------------

function showView() {
  const view = (location.hash || "#map").slice(1).split("?")[0];
  if (view === "dead-letters") loadLetters();
  if (view === "sagas") loadSagas();
  if (view !== "logs" && logs.source) {
    logs.source.close();
    logs.source = null;
  }
  for (const section of document.querySelectorAll(".view")) section.hidden = section.id !== view;
  for (const link of document.querySelectorAll("nav a")) {
    link.classList.toggle("active", link.dataset.view === view);
  }
}

async function start() {
  window.addEventListener("hashchange", showView);
  showView();
  document.getElementById("search").addEventListener("submit", (event) => {
    event.preventDefault();
    search();
  });
  document.getElementById("refresh-letters").addEventListener("click", loadLetters);
  document.getElementById("saga-filter").addEventListener("submit", (event) => {
    event.preventDefault();
    loadSagas();
  });
  document.getElementById("replay-all").addEventListener("click", replayAll);
  document.getElementById("log-filter").addEventListener("submit", (event) => {
    event.preventDefault();
    showLogs();
  });
  state.map = await getJson("/api/map");
  await fillInstances();
  drawMap(state.map);
  fillSearchChoices(state.map);
  follow();
  if (location.hash.startsWith("#traces")) search();
}

start();
