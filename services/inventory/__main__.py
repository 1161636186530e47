"""`python -m services.inventory`: serve the inventory (see `mesh.runtime.service` for settings)."""

from mesh.runtime.service import main
from services.inventory.bootstrap import bootstrap

main("inventory", bootstrap)
