"""Where a run directory keeps its rollouts: `rollouts/<service>.json`, one per service,
the last one's, written whole (`write_json_atomically`) under `routing.changing`."""

from __future__ import annotations

import json
from pathlib import Path

from mesh.control.rollouts.model import Rollout
from mesh.control.state import write_json_atomically

ROLLOUTS_DIR = "rollouts"


def path_of(run_dir: Path, service: str) -> Path:
    return run_dir / ROLLOUTS_DIR / f"{service}.json"


class UnreadableRollout(ValueError):
    """A rollout's file is not what `save` writes (changed by hand, or from another
    version of the mesh); the message names it."""


def load(run_dir: Path, service: str) -> Rollout | None:
    """The last rollout of `service`, if it had one."""
    path = path_of(run_dir, service)
    try:
        return Rollout.from_json(json.loads(path.read_text()))
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError) as error:
        raise UnreadableRollout(f"{path} cannot be read as a rollout ({error!r})") from None


def save(run_dir: Path, rollout: Rollout) -> None:
    path = path_of(run_dir, rollout.spec.service)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomically(path, rollout.to_json())


def every(run_dir: Path) -> list[Rollout]:
    """The last rollout of each service that had one, by service."""
    folder = run_dir / ROLLOUTS_DIR
    if not folder.is_dir():
        return []
    found = (load(run_dir, path.stem) for path in sorted(folder.glob("*.json")))
    return [rollout for rollout in found if rollout is not None]


def forget_all(run_dir: Path) -> None:
    """Drop the rollouts of an earlier mesh from this run directory (a new mesh starts
    from mesh.yaml's split)."""
    folder = run_dir / ROLLOUTS_DIR
    if folder.is_dir():
        for path in folder.glob("*.json"):
            path.unlink()
