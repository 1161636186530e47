"""`python -m services.search`: serve search (settings: `mesh.runtime.service`; the
embedding model: `services.search.embeddings`)."""

from mesh.runtime.service import main
from services.search.bootstrap import bootstrap

main("search", bootstrap)
