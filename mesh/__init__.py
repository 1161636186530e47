"""The platform every shop service runs on, in layers whose imports point one way.

`runtime` is what a service imports; `control` reads mesh.yaml, renders Envoy, NATS and
the PKI, and supervises a local mesh; `deploy` renders the mesh for Compose and
Kubernetes; `tools` drive a mesh of their own (benchmarks, chaos); `cli` is meshctl.
docs/architecture.md draws the arrows, and `lint-imports` checks them.
"""
