"""The documents of one Ingest written in calls of whole documents, and what became of each.

Precompute commits a call's entries or none, so an Ingest sends its documents in runs of whole
documents of about one encoded batch each (`calls_of`). When a call fails because the object
store is down or the tenant reached a quota, the documents of the calls before it are whole and
kept; that call's documents fail with the cause, and the rest are not tried (`write_in_calls`).
Any other error ends the Ingest as it is. When no document could be written, the first cause's
kind is raised (UNAVAILABLE for the store, RESOURCE_EXHAUSTED for a quota), naming the document.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from blockrag.errors import ObjectStoreError, QuotaExceededError

# failures that end an Ingest document by document instead of failing the whole call
PER_DOCUMENT = (ObjectStoreError, QuotaExceededError)


@dataclass
class IngestOutcome:
    """written: positions in the request of the documents whose calls went in, in order;
    failed: (document id, reason) of the others, in request order; computed: blocks the calls that
    went in computed (the rest were cached)."""

    written: list[int] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    computed: int = 0


def calls_of(tokens: Sequence[int], batch_tokens: int) -> list[list[int]]:
    """Documents by position, given their tokens, in consecutive runs of at most batch_tokens
    each; a document longer than that is a run alone."""
    calls: list[list[int]] = []
    total = 0
    for i, n in enumerate(tokens):
        if not calls or total + n > batch_tokens:
            calls.append([])
            total = 0
        calls[-1].append(i)
        total += n
    return calls


async def write_in_calls(document_ids: Sequence[str], tokens: Sequence[int], batch_tokens: int,
                         write: Callable[[list[int]], Awaitable[int]]) -> IngestOutcome:
    """Call ``write(positions)`` (-> blocks computed) for each run of ``calls_of``, in order, until
    one raises a PER_DOCUMENT error; raises that error's kind when nothing was written."""
    outcome = IngestOutcome()
    first_error: ObjectStoreError | QuotaExceededError | None = None
    for call in calls_of(tokens, batch_tokens):
        if first_error is not None:
            outcome.failed += [(document_ids[i], f"not tried: document {outcome.failed[0][0]!r} failed before it")
                               for i in call]
            continue
        try:
            outcome.computed += await write(call)
        except PER_DOCUMENT as e:
            first_error = e
            outcome.failed += [(document_ids[i], str(e)) for i in call]
            continue
        outcome.written += call
    if not outcome.written:
        (first, reason), quota = outcome.failed[0], isinstance(first_error, QuotaExceededError)
        error = QuotaExceededError if quota else ObjectStoreError
        raise error(f"no document was ingested (0 of {len(outcome.failed)} written): "
                    f"{'a quota was reached' if quota else 'the object store failed'} on document {first!r}: {reason}")
    return outcome
