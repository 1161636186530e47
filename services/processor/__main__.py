"""`python -m services.processor`: serve the card processor (settings:
`mesh.runtime.service`)."""

from mesh.runtime.service import main
from services.processor.bootstrap import bootstrap

main("processor", bootstrap)
