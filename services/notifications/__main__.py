"""`python -m services.notifications`: serve notifications (see `mesh.service` for settings)."""

from mesh.service import main
from services.notifications.bootstrap import bootstrap

main("notifications", bootstrap)
