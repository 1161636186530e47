"""Each consumer does what it does with only what its contracts declare.

The shop runs a day (tests/contracts/shop.py: every service's real code, in one process)
twice with whole messages, then once with one consumer handed, of one provider's events
and answers, only the fields its contract on that provider declares. Whatever the
consumer reads beyond its contract is then missing, and what the shop holds and answers
at the end of the day changes: the contract is out of date. (A test by difference,
rather than one recording what a handler reads, because the handlers copy, store and
forward messages, which a recording stand-in for a message could not follow.)

A consumer's requests are checked as they are sent: they set exactly the fields its
contract declares.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from mesh.tools.consumer_contracts import Contract, load_contracts, undeclared_paths, unset_paths
from tests.contracts.shop import Handing, Outcome, differences, outcome, running_shop, shop_a_day

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CONTRACTS = load_contracts(ROOT)
CALLING = [contract for contract in CONTRACTS if contract.interactions]


def named(contract: Contract) -> str:
    return f"{contract.consumer}-{contract.provider}"


async def a_day(directory: Path, handing: Handing) -> Outcome:
    """What the shop holds and answers after a day in which consumers are handed what
    `handing` says."""
    async with running_shop(directory, handing) as shop:
        return await outcome(shop, await shop_a_day(shop))


def declared(contract: Contract) -> list[str]:
    """What the contract declares that the day must hand its consumer: each event, each
    method."""
    methods = dict.fromkeys(interaction.grpc_path for interaction in contract.interactions)
    return [*(event.name for event in contract.events), *methods]


@pytest.mark.parametrize("contract", CONTRACTS, ids=named)
async def test_a_consumer_does_the_same_with_only_what_its_contract_declares(
    contract: Contract, tmp_path: Path
) -> None:
    whole = await a_day(tmp_path / "whole", Handing())
    again = await a_day(tmp_path / "again", Handing())
    handing = Handing(contract)
    handed = await a_day(tmp_path / "handed", handing)

    # The consumer's own tables first: where it went astray, before what followed from it.
    found = sorted(
        differences(whole, again, handed), key=lambda at: not at.startswith(f"{contract.consumer}/")
    )
    if found:
        pytest.fail(
            f"{contract.consumer} reads more of {contract.provider} than {contract.source} "
            "declares: handed only the declared fields, the shop ends its day otherwise "
            "(where: with whole messages -> with the declared fields):\n  "
            + "\n  ".join(found[:20])
        )
    never = [name for name in declared(contract) if not handing.cut[name]]
    assert not never, f"the shop's day never hands {contract.consumer} {never}: add it to the day"


@pytest.mark.parametrize("contract", CALLING, ids=named)
async def test_a_consumer_sets_the_request_fields_its_contract_declares(
    contract: Contract, tmp_path: Path
) -> None:
    handing = Handing()
    await a_day(tmp_path, handing)

    for grpc_path in dict.fromkeys(i.grpc_path for i in contract.interactions):
        requests = handing.requests[(contract.consumer, grpc_path)]
        assert requests, f"the shop's day never has {contract.consumer} call {grpc_path}"
        fields = contract.request_paths(grpc_path)
        for request in requests:
            assert not undeclared_paths(request, fields), (
                f"{contract.consumer} sets {undeclared_paths(request, fields)} in {grpc_path}, "
                f"which {contract.source} does not declare"
            )
            assert not unset_paths(request, fields), (
                f"{contract.consumer} leaves {unset_paths(request, fields)} of {grpc_path} "
                f"unset, which {contract.source} declares it sets"
            )
