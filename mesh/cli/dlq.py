"""`meshctl dlq list | show SEQ | replay SEQ | replay --all`: the dead letters."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from mesh.cli.command import Command, UsageError, add_run_dir, run_dir
from mesh.control import deadletters, natsconf
from mesh.control.contracts import ContractsError
from mesh.control.local import ControlError, running_state


def _letter_row(letter: deadletters.DeadLetter) -> str:
    """One dead letter in `meshctl dlq list`: who wrote it, the event's subject, why."""
    writer = f"{letter.producer} (outbox)" if letter.producer else letter.consumer
    return f"{letter.sequence:>6}  {writer:<24} {letter.subject:<36} {letter.reason}"


async def _replay_all(js: JetStreamContext) -> int:
    """Replay every dead letter that holds up; say why each other one is left."""
    outcomes = await deadletters.replay_all(js)
    for outcome in outcomes:
        letter = outcome.letter
        if outcome.refused:
            print(f"left {letter.sequence}: {outcome.refused}", file=sys.stderr)
        else:
            print(
                f"replayed {letter.sequence} to {letter.subject} (was dead for {letter.consumer})"
            )
    return 1 if any(outcome.refused for outcome in outcomes) else 0


def dlq(run_dir: Path, action: str, sequence: int | None, as_json: bool) -> int:
    """List, show or replay the dead letters of the mesh running from `run_dir`."""
    state = running_state(run_dir)
    if state is None:
        raise ControlError(f"no mesh is running from {run_dir}")

    async def work(js: JetStreamContext) -> int:
        if action == "list":
            letters = await deadletters.dead_letters(js)
            if as_json:
                print(json.dumps([letter.describe() for letter in letters], indent=2))
            else:
                print(f"{len(letters)} dead letters")
                for letter in letters:
                    print(f"  {_letter_row(letter)}")
            return 0
        if action == "show":
            assert sequence is not None
            print(json.dumps((await deadletters.dead_letter(js, sequence)).describe(), indent=2))
            return 0
        if sequence is not None:
            letter = await deadletters.replay(js, sequence)
            print(f"replayed {sequence} to {letter.subject} (was dead for {letter.consumer})")
            return 0
        return await _replay_all(js)

    try:
        return asyncio.run(deadletters.with_jetstream(natsconf.admin_from_state(state), work))
    except (NotFoundError, ValueError) as error:
        raise ControlError(f"dlq {action}: {error}") from None


def _add_arguments(command: argparse.ArgumentParser) -> None:
    add_run_dir(command)
    command.add_argument("action", choices=["list", "show", "replay"])
    command.add_argument("sequence", nargs="?", type=int, help="a dead letter's sequence number")
    command.add_argument("--all", action="store_true", help="replay every dead letter")
    command.add_argument("--json", action="store_true", help="machine-readable list")


def _run(args: argparse.Namespace) -> int:
    if args.action == "replay" and (args.sequence is None) == (not args.all):
        raise UsageError("replay: give one SEQUENCE or --all")
    if args.action == "show" and args.sequence is None:
        raise UsageError("show: give a SEQUENCE")
    return dlq(run_dir(args), args.action, args.sequence, args.json)


DLQ = Command(_add_arguments, _run, errors=(ContractsError, ControlError))
