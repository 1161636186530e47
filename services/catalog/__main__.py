"""`python -m services.catalog`: serve the catalog (see `mesh.runtime.service` for settings)."""

from mesh.runtime.service import main
from services.catalog.bootstrap import bootstrap

main("catalog", bootstrap)
