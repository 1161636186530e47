"""`python -m services.identity`: serve identity (see `mesh.runtime.service` for settings)."""

from mesh.runtime.service import main
from services.identity.bootstrap import bootstrap

main("identity", bootstrap)
