"""The first passage read exactly: on an engine with a shared opening, the resolver hands the
prompt's first context block in its lead form (engine.encode_lead: right after the opening, as
full attention reads it), computed once per block and version and kept in memory under its own
key; the cached form stays what the store and every other place use."""

from __future__ import annotations

import asyncio

import pytest
import torch
from resolve_parts import tiny_runtime

from blockrag.attention.reference import reference_logits
from blockrag.kvcache.memory_tier import ByteLRU
from blockrag.resolve import BlockRef, BlockResolver, BlockWriter, LocalEncoder, ResolveLimits, StoreTier

from test_resolver import TENANT, TEXTS, CountingEncoder

GAP = 50


@pytest.fixture(scope="module")
def opened(tiny_dir):
    return tiny_runtime(tiny_dir, opening_gap=GAP)


def _resolver(index, objects, **kwargs) -> tuple[BlockResolver, CountingEncoder]:
    encoder = CountingEncoder(BlockWriter(index, objects, ResolveLimits()))
    return BlockResolver(encoder, store=StoreTier(index, objects), memory=ByteLRU(1 << 26), **kwargs), encoder


def _refs(*texts: str) -> list[BlockRef]:
    return [BlockRef.of(TENANT, text=t) for t in texts]


def test_the_first_block_comes_in_its_lead_form_and_the_prompt_is_exact_there(opened, index, objects):
    resolver, encoder = _resolver(index, objects)
    refs = _refs(TEXTS[0], TEXTS[1], TEXTS[2])
    cold = asyncio.run(resolver.resolve(opened, TENANT, refs))
    assert encoder.calls == [TEXTS[:3]]  # the cached forms, one call, as without lead blocks
    engine, template = opened.engine, opened.template
    ids = [template.block_ids(t) for t in TEXTS[:3]]
    lead = engine.encode_lead(ids[0])
    assert torch.allclose(cold.blocks[0].kv.keys, lead.keys, atol=1e-5)
    assert torch.allclose(cold.blocks[0].kv.values, lead.values, atol=1e-5)
    assert torch.allclose(cold.blocks[1].kv.values, engine.encode_block(ids[1]).values, atol=1e-5)
    assert [b.tier for b in cold.blocks] == ["computed"] * 3 and cold.lead_computed
    assert cold.computed_tokens == cold.context_tokens  # the first block counted once
    # the prompt over the resolution is the reference with the first passage global
    final = template.final_ids("Who signs the permits?")
    prefix = template.prefix_ids()
    got = engine.prefill(cold.kvs, final).logits
    exact = reference_logits(engine.model, [prefix, *ids], final, opening=engine.opening, global_blocks={1})
    assert (got - exact).abs().max().item() <= 1e-4

    # again: the lead form from memory, nothing computed; the store holds the cached form only
    again = asyncio.run(resolver.resolve(opened, TENANT, refs))
    assert [b.tier for b in again.blocks] == ["memory"] * 3 and again.computed_tokens == 0
    assert not again.lead_computed
    other, other_encoder = _resolver(index, objects)  # another replica: the store, then the lead here
    warm = asyncio.run(other.resolve(opened, TENANT, refs))
    # the tiers say where the cached forms came from; the lead form's work is in computed_tokens
    assert other_encoder.calls == [] and [b.tier for b in warm.blocks] == ["store"] * 3 and warm.lead_computed
    assert warm.computed_tokens == len(ids[0])
    assert torch.allclose(warm.blocks[0].kv.values, lead.values, atol=1e-5)


def test_a_block_in_second_place_is_its_cached_form_even_after_it_led(opened, index, objects):
    resolver, _ = _resolver(index, objects)
    asyncio.run(resolver.resolve(opened, TENANT, _refs(TEXTS[0], TEXTS[1])))
    swapped = asyncio.run(resolver.resolve(opened, TENANT, _refs(TEXTS[1], TEXTS[0])))
    cached = opened.engine.encode_block(opened.template.block_ids(TEXTS[0]))
    assert torch.allclose(swapped.blocks[1].kv.values, cached.values, atol=1e-5)
    lead = opened.engine.encode_lead(opened.template.block_ids(TEXTS[1]))
    assert torch.allclose(swapped.blocks[0].kv.values, lead.values, atol=1e-5)


def test_switched_off_or_without_an_opening_the_first_block_is_its_cached_form(opened, runtime, index, objects):
    off, _ = _resolver(index, objects, exact_first_passage=False)
    resolution = asyncio.run(off.resolve(opened, TENANT, _refs(TEXTS[3])))
    cached = opened.engine.encode_block(opened.template.block_ids(TEXTS[3]))
    assert torch.allclose(resolution.blocks[0].kv.values, cached.values, atol=1e-5)
    plain = BlockResolver(LocalEncoder(), memory=ByteLRU(1 << 26))
    resolution = asyncio.run(plain.resolve(runtime, TENANT, _refs(TEXTS[3])))
    assert torch.allclose(resolution.blocks[0].kv.values,
                          runtime.engine.encode_block(runtime.template.block_ids(TEXTS[3])).values, atol=1e-5)
