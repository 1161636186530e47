"""`python -m services.orders`: serve the orders (see `mesh.service` for settings)."""

from mesh.service import main
from services.orders.bootstrap import bootstrap

main("orders", bootstrap)
