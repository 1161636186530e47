"""`python -m services.orders`: serve the orders (see `mesh.runtime.service` for settings)."""

from mesh.runtime.service import main
from services.orders.bootstrap import bootstrap

main("orders", bootstrap)
