"""`python -m services.identity`: serve identity (see `mesh.service` for settings)."""

from mesh.service import main
from services.identity.bootstrap import bootstrap

main("identity", bootstrap)
