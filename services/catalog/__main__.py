"""`python -m services.catalog`: serve the catalog (see `mesh.service` for settings)."""

from mesh.service import main
from services.catalog.bootstrap import bootstrap

main("catalog", bootstrap)
