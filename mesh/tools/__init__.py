"""Tools that drive a mesh of their own: benchmarks, load generation, chaos scenarios."""
