"""`meshctl`: the mesh's command line, one module of this package per command."""

from mesh.cli.app import main

__all__ = ["main"]
