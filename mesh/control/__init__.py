"""The control plane: from mesh.yaml to a running local mesh.

In the order it works:

* `topology/`: mesh.yaml, read and checked (errors name the file and line).
* `api`: the contracts' services and methods, read from the descriptor set.
* `plan`: the instances, their ports and their paths in the run directory.
* Renderers: `envoy/` (every sidecar and the edge), `natsconf` (NATS and its users),
  `pki` and `certfiles` (the CA and the SPIFFE leaves), `openapi` and
  `openapi_schemas` (the edge's REST API), `edge_companion` (the edge's reflection and health).
* Running it: `supervisor` (with `process`, `apps` (the apps forked from one preloaded
  Python), `state`, `probe`, `procstat`), `launch` (an app's environment), `local` (a run
  directory: up, down, its state), `tracestore`.
* Looking at it: `console/` (the web console: map, traces, sagas, dead letters, logs),
  over `tracestore`, `sagas` (the latest sagas from the event bus), `deadletters` and
  `logfiles` (the apps' logs), which `meshctl` uses too.
* Around it: `contracts` (buf and code generation), `binaries` (envoy, nats-server, buf
  and grpcurl from their Python packages).
"""
