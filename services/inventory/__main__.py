"""`python -m services.inventory`: serve the inventory (see `mesh.service` for settings)."""

from mesh.service import main
from services.inventory.bootstrap import bootstrap

main("inventory", bootstrap)
