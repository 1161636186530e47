"""How the console is reached: its URL, the token every visit must show (`server`), and
the one path that answers without it (its health, for the supervisor's probe)."""

from __future__ import annotations

import secrets
from pathlib import Path

#: What the supervisor probes: it answers without the token, and tells nothing.
HEALTH_PATH = "/healthz"

#: Where in the run directory the token is kept (owner-only, as all of it), run after run,
#: so an open console page keeps working across a restart of the mesh.
TOKEN_FILE = Path("console") / "token"


def ensure_token(run_dir: Path) -> str:
    """The run directory's console token, made on first use."""
    path = run_dir / TOKEN_FILE
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(24)
    path.write_text(token + "\n")
    return token


def read_token(run_dir: Path) -> str:
    return (run_dir / TOKEN_FILE).read_text().strip()


def console_url(port: int, token: str) -> str:
    """The URL that opens the console (the first visit trades the token for a cookie)."""
    return f"http://127.0.0.1:{port}/?token={token}"
