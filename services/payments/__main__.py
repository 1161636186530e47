"""`python -m services.payments`: serve payments (see `mesh.runtime.service` for settings)."""

from mesh.runtime.service import main
from services.payments.bootstrap import bootstrap

main("payments", bootstrap)
