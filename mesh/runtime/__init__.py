"""What every service imports: its runner, storage, event bus and the rules every call
keeps. It knows nothing of `mesh.yaml` or of how the mesh is run (the packages beside
it do, and import it, never the other way: import-linter holds that in `make test`)."""
