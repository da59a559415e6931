"""An Ingest's documents in calls of whole documents (blockrag.resolve.ingest_calls): the runs,
and what becomes of each document when a call fails by the store, by a quota or otherwise."""

from __future__ import annotations

import asyncio

import pytest

from blockrag.errors import InvalidRequestError, ObjectStoreError, QuotaExceededError
from blockrag.resolve.ingest_calls import calls_of, write_in_calls

IDS = ["a", "b", "c", "d", "e"]
TOKENS = [30, 50, 90, 20, 20]  # runs of at most 100 tokens: [a b] [c] [d e]


def test_documents_go_in_runs_of_whole_documents_up_to_the_batch():
    assert calls_of(TOKENS, 100) == [[0, 1], [2], [3, 4]]
    assert calls_of([150, 10], 100) == [[0], [1]]  # longer than a batch: alone
    assert calls_of([1, 1, 1], 1) == [[0], [1], [2]]
    assert calls_of([60, 40, 1], 100) == [[0, 1], [2]]  # exactly a batch fits


def run(failing_call: int | None, error: Exception | None = None):
    """write_in_calls over IDS/TOKENS, the call numbered failing_call raising error; each call
    that goes in computes one block per document."""
    calls: list[list[int]] = []

    async def write(call: list[int]) -> int:
        calls.append(call)
        if len(calls) - 1 == failing_call:
            raise error
        return len(call)

    return asyncio.run(write_in_calls(IDS, TOKENS, 100, write)), calls


def test_every_call_goes_in():
    outcome, calls = run(None)
    assert (outcome.written, outcome.failed, outcome.computed) == ([0, 1, 2, 3, 4], [], 5)
    assert calls == [[0, 1], [2], [3, 4]]


@pytest.mark.parametrize("error", [ObjectStoreError("cannot reach S3 to write 'x'"),
                                   QuotaExceededError("over its quota of 100 tokens per minute")])
def test_a_store_or_quota_failure_keeps_the_documents_before_and_reports_the_rest(error):
    outcome, calls = run(1, error)
    assert calls == [[0, 1], [2]]  # nothing sent after the failure
    assert (outcome.written, outcome.computed) == ([0, 1], 2)
    assert outcome.failed == [("c", str(error)), ("d", "not tried: document 'c' failed before it"),
                              ("e", "not tried: document 'c' failed before it")]


def test_nothing_written_raises_the_first_causes_kind_naming_the_document():
    with pytest.raises(ObjectStoreError) as store:
        run(0, ObjectStoreError("cannot reach S3"))
    assert str(store.value) == ("no document was ingested (0 of 5 written): the object store failed on document "
                                "'a': cannot reach S3")
    with pytest.raises(QuotaExceededError) as quota:
        run(0, QuotaExceededError("over quota"))
    assert str(quota.value) == ("no document was ingested (0 of 5 written): a quota was reached on document 'a': "
                                "over quota")


def test_any_other_error_ends_the_ingest_as_it_is():
    refused = InvalidRequestError("a block is too long")
    with pytest.raises(InvalidRequestError) as raised:
        run(1, refused)
    assert raised.value is refused
