"""SegmentBatcher: concurrent segment calls gathered into one `segment_many`.

An Ingest request sends one Segment call per document, all at once; segmented one by one, each
document is its own handful of small encoder batches, which leaves a GPU mostly idle. The batcher
holds a call for `wait_s` so that the others of its request join it, then segments up to
`max_batch` texts together in a worker thread (the event loop keeps taking calls meanwhile), one
batch at a time. Ray Serve's own `serve.batch` needs a replica context, so the servicer could not
run in process (tests, local pipelines); this works in both.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Protocol

from blockrag.segment.spans import SegmentOptions, Span


class ManySegmenter(Protocol):
    def segment_many(self, texts: Sequence[str], options: Sequence[SegmentOptions]) -> list[list[Span]]: ...


class SegmentBatcher:
    def __init__(self, segmenter: ManySegmenter, max_batch: int = 32, wait_s: float = 0.005):
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        self.segmenter, self.max_batch, self.wait_s = segmenter, max_batch, wait_s
        self._pending: list[tuple[str, SegmentOptions, asyncio.Future]] = []
        self._runner: asyncio.Task | None = None

    async def segment(self, text: str, options: SegmentOptions) -> list[Span]:
        """The blocks of the text, segmented together with the calls that arrive with it."""
        future = asyncio.get_running_loop().create_future()
        self._pending.append((text, options, future))
        if self._runner is None or self._runner.done():
            self._runner = asyncio.create_task(self._run())
        return await future

    async def _run(self) -> None:
        while self._pending:
            await asyncio.sleep(self.wait_s)  # the other calls of the request join
            batch, self._pending = self._pending[:self.max_batch], self._pending[self.max_batch:]
            texts, options = [t for t, _, _ in batch], [o for _, o, _ in batch]
            try:
                results = await asyncio.to_thread(self.segmenter.segment_many, texts, options)
            except Exception as e:  # noqa: BLE001 - handed to the callers below, never swallowed
                if len(batch) == 1:
                    _settle(batch[0][2], error=e)
                    continue
                # one text failed the batch: each alone, so that each caller gets its own outcome
                for text, option, future in batch:
                    try:
                        [spans] = await asyncio.to_thread(self.segmenter.segment_many, [text], [option])
                    except Exception as alone:  # noqa: BLE001 - the caller's own error
                        _settle(future, error=alone)
                    else:
                        _settle(future, spans)
                continue
            for (_, _, future), spans in zip(batch, results):
                _settle(future, spans)


def _settle(future: asyncio.Future, result: list[Span] | None = None, error: BaseException | None = None) -> None:
    if future.done():  # the caller went away (cancelled)
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
