"""The platform every shop service runs on: contracts tooling, the shared gRPC runner,
and (as it grows) the Envoy mesh, certificates, supervision and the event bus."""
