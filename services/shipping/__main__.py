"""`python -m services.shipping`: serve shipping (see `mesh.service` for settings)."""

from mesh.service import main
from services.shipping.bootstrap import bootstrap

main("shipping", bootstrap)
