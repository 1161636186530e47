"""`python -m services.payments`: serve payments (see `mesh.service` for settings)."""

from mesh.service import main
from services.payments.bootstrap import bootstrap

main("payments", bootstrap)
