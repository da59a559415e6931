"""Segmentation: text -> blocks with offsets and token counts.

The learned segmenter's backbone runs on the replica's GPU when Ray gave it one (`num_gpus` of
the segmentation service in the Serve config; a fractional share lets it sit beside other
replicas), else on its CPU threads. Concurrent Segment calls (an Ingest request sends one per document, all at once)
are gathered into one `segment_many` (blockrag.segment.batcher): the boundary model reads the
documents together, every encoder pass one padded batch per chunk across them.
"""

from __future__ import annotations

import ray
from ray import serve

from blockrag.errors import InvalidRequestError
from blockrag.models import load_tokenizer
from blockrag.prompt import PromptTemplate
from blockrag.segment import ParagraphSegmenter, SegmentOptions
from blockrag.segment.batcher import SegmentBatcher
from blockrag.telemetry import observe_segments, time_segmentation
from blockrag.v1 import segmentation_pb2 as pb
from blockrag_services.access import SEGMENT, authorizer
from blockrag_services.config import PlatformConfig
from blockrag_services.errors import unary
from blockrag_services.routing import OneApplication

SERVICE = "segmentation"


def _segmenter(config: PlatformConfig, count_tokens):
    if config.segmenter == "paragraph":
        return ParagraphSegmenter(count_tokens)
    if config.segmenter != "learned":
        raise InvalidRequestError(f"segmenter must be 'learned' or 'paragraph', got {config.segmenter!r}")
    from pathlib import Path

    from blockrag.segment.backbone import choose_device
    from blockrag.segment.default import load_default_segmenter, load_segmenter

    if config.segmenter_path:
        segmenter = load_segmenter(Path(config.segmenter_path), count_tokens)
    else:
        segmenter = load_default_segmenter(count_tokens)
    # the GPU Ray gave this replica, if any (ray.get_gpu_ids() is empty without a GPU share)
    return segmenter.to(choose_device(ray.get_gpu_ids() if ray.is_initialized() else []))


@serve.deployment
class Segmentation(OneApplication):
    application = SERVICE

    def __init__(self, args: dict | None = None):
        self.config = PlatformConfig.from_args(args)
        self.authorizer = authorizer(self.config)  # no index of its own: opened for the first key
        import torch

        torch.set_num_threads(self.config.resources_of("segmentation").threads())  # the boundary model's backbone
        template = PromptTemplate(load_tokenizer(self.config.model.model))

        def count_tokens(text: str) -> int:
            # as the prompt holds a block, so max_block_tokens bounds what precompute encodes
            return len(template.block_ids(text))

        self.segmenter = _segmenter(self.config, count_tokens)
        self.batcher = SegmentBatcher(self.segmenter)

    def _options(self, request: pb.SegmentOptions) -> SegmentOptions:
        c = self.config
        max_tokens = request.max_block_tokens or c.segment_max_block_tokens
        if max_tokens > c.limits.max_block_tokens:
            raise InvalidRequestError(
                f"max_block_tokens {max_tokens} is over the limit of {c.limits.max_block_tokens} tokens per block")
        return SegmentOptions(max_block_tokens=max_tokens,
                              min_block_tokens=request.min_block_tokens or c.segment_min_block_tokens,
                              granularity=request.granularity if request.HasField("granularity")
                              else c.segment_granularity)

    @unary(SERVICE, pb.SegmentResponse, SEGMENT)
    async def Segment(self, request: pb.SegmentRequest) -> pb.SegmentResponse:
        if len(request.text.encode()) > self.config.limits.max_document_bytes:
            raise InvalidRequestError(
                f"text is {len(request.text.encode())} bytes, over the limit of {self.config.limits.max_document_bytes}")
        if not request.text.strip():
            raise InvalidRequestError("text is empty: there is nothing to segment")
        options = self._options(request.options)
        with time_segmentation():
            spans = await self.batcher.segment(request.text, options)
        observe_segments([s.token_count for s in spans])
        return pb.SegmentResponse(blocks=[
            pb.Segment(start=s.start, end=s.end, text=s.text, token_count=s.token_count) for s in spans])

    async def ready(self) -> str:
        return "ok"
