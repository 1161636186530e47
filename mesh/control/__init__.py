"""The control plane: mesh.yaml, the plans made from it, the configuration rendered for
Envoy, NATS and the PKI, and the supervisor that runs a local mesh."""
