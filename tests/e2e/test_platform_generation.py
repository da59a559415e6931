"""Ingest and generate over gRPC; the answer must be the in-process engine's for the same blocks."""

from __future__ import annotations

import uuid

from calls import COLLECTION, ask

from blockrag.pipeline import LocalPipeline
from blockrag.samples import sample_documents
from blockrag.prompt import PromptTemplate
from blockrag.segment import SegmentOptions
from blockrag.segment.default import load_default_segmenter
from blockrag.v1 import generation_pb2 as pb
from blockrag_services.config import PlatformConfig


def test_ingest_uses_the_learned_segmenter(ingested, block_texts, default_model):
    assert [d.document_id for d in ingested.documents] == list(sample_documents())
    assert ingested.model_version
    # the platform's blocks are the shipped segmenter's at the service defaults, counted by the
    # served tokenizer; the response says each block's size
    template = PromptTemplate(default_model[1])
    segmenter = load_default_segmenter(lambda text: len(template.block_ids(text)))
    defaults = PlatformConfig()
    options = SegmentOptions(max_block_tokens=defaults.segment_max_block_tokens,
                             min_block_tokens=defaults.segment_min_block_tokens,
                             granularity=defaults.segment_granularity)
    for document, text in zip(ingested.documents, sample_documents().values()):
        spans = segmenter.segment(text, options)
        assert [block_texts[b] for b in document.block_ids] == [s.text for s in spans]
        assert list(document.block_tokens) == [s.token_count for s in spans]
        # within the size bounds (a document shorter than the minimum stays one block)
        assert all(n <= options.max_block_tokens for n in document.block_tokens)
        assert len(document.block_tokens) == 1 or min(document.block_tokens) >= options.min_block_tokens


def test_answer_equals_the_in_process_engine(generation, ingested, block_texts, served_runtime):
    ids = [b for d in ingested.documents for b in d.block_ids][:6]
    question = "Which river runs through Veldmark?"
    text, usage = ask(generation, pb.GenerateRequest(
        question=question, max_new_tokens=24, context=[pb.ContextBlock(block_id=b) for b in ids]))

    pipeline = LocalPipeline(served_runtime.engine, served_runtime.tokenizer)
    kvs, _ = pipeline.context_blocks([block_texts[b] for b in ids])
    answer = pipeline.answer(kvs, question, max_new_tokens=24)
    expected = "".join(answer)
    assert text == expected and expected.strip()
    assert list(usage.block_ids) == ids
    assert usage.completion_tokens == answer.stats.new_tokens
    assert usage.prompt_tokens == sum(kv.num_tokens for kv in kvs) + len(pipeline.template.final_ids(question))


def test_second_ask_takes_its_context_from_the_replica_cache(generation, ingested):
    request = pb.GenerateRequest(question="How much does a ticket from Veldmark to Brennholt cost?",
                                 collection=COLLECTION, top_k=2, max_new_tokens=8)
    _, first = ask(generation, request)
    _, second = ask(generation, request)
    assert list(second.block_ids) == list(first.block_ids) and len(second.block_ids) == 2
    assert second.blocks_by_tier["memory"] == 2 and second.blocks_by_tier.get("computed", 0) == 0
    # only the question is computed when every block is cached, the first passage's lead form
    # (read exactly, right after the opening) included; the first ask may have computed that one
    assert second.computed_tokens == second.prompt_tokens - second.cached_tokens
    lead = second.cached_tokens - first.cached_tokens
    assert first.cached_tokens > 0 and lead >= 0 and first.computed_tokens - second.computed_tokens == lead
    assert second.ttft_ms > 0


def test_literal_blocks_are_computed_once_then_cached(generation):
    text = f"The archive code of this test run is {uuid.uuid4().hex}."
    request = pb.GenerateRequest(question="What is the archive code?", max_new_tokens=4,
                                 context=[pb.ContextBlock(text=text)])
    _, first = ask(generation, request)
    _, second = ask(generation, request)
    assert dict(first.blocks_by_tier) == {"computed": 1}
    assert dict(second.blocks_by_tier) == {"memory": 1}
    block_tokens = first.computed_tokens - second.computed_tokens
    assert block_tokens > 0 and second.cached_tokens - first.cached_tokens == block_tokens
    assert first.prompt_tokens == second.prompt_tokens
    assert first.block_ids == second.block_ids


def test_reingesting_the_same_text_computes_nothing(generation, ingested):
    name, text = next(iter(sample_documents().items()))
    reply = generation.Ingest(pb.IngestRequest(collection="again", documents=[pb.Document(id=name, text=text)]),
                              metadata=(("application", "generation"),))
    assert reply.computed_blocks == 0
    assert list(reply.documents[0].block_ids) == list(ingested.documents[0].block_ids)
