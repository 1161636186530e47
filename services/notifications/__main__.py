"""`python -m services.notifications`: serve notifications (settings:
`mesh.runtime.service`)."""

from mesh.runtime.service import main
from services.notifications.bootstrap import bootstrap

main("notifications", bootstrap)
