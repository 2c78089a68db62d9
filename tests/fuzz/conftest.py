"""The fuzz tests' tally: each test counts its examples, and each module prints a summary
line when it ends (run pytest with `-s` to see it)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fuzz.contract import Tally, summary


@pytest.fixture(scope="module")
def fuzz_tallies(request: pytest.FixtureRequest) -> Iterator[list[Tally]]:
    tallies: list[Tally] = []
    yield tallies
    if tallies:
        print(f"\n{summary(request.module.__name__.rsplit('.', 1)[-1], tallies)}")


@pytest.fixture
def tally(fuzz_tallies: list[Tally], request: pytest.FixtureRequest) -> Tally:
    """This test's counter; made once per test, not once per example."""
    counter = Tally(request.node.name)
    fuzz_tallies.append(counter)
    return counter
