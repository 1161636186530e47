"""The mesh beyond one machine: Docker Compose and Kubernetes, rendered from mesh.yaml."""
