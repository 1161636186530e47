"""`python -m services.shipping`: serve shipping (see `mesh.runtime.service` for settings)."""

from mesh.runtime.service import main
from services.shipping.bootstrap import bootstrap

main("shipping", bootstrap)
