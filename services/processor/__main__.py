"""`python -m services.processor`: serve the card processor (see `mesh.service` for settings)."""

from mesh.service import main
from services.processor.bootstrap import bootstrap

main("processor", bootstrap)
