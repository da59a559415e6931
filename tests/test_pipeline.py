"""LocalPipeline: blocks from the cache directory's index and objects, corrupt entries replaced,
answers equal the engine's."""

from pathlib import Path
from urllib.parse import urlsplit

from blockrag.kvcache.index import CacheIndex, block_id_for
from blockrag.kvcache.local_store import LocalDirectoryStore
from blockrag.pipeline import INDEX_FILE, LocalPipeline

PASSAGES = ["The river Auna runs through Veldmark.", "A ticket costs 9 crowns.", "The river Auna runs through Veldmark."]


def test_blocks_come_from_the_store_the_second_time(default_engine, default_model, tmp_path):
    store = LocalDirectoryStore(tmp_path)
    pipeline = LocalPipeline(default_engine, default_model[1], store)
    first, stats = pipeline.context_blocks(PASSAGES)
    assert (stats.blocks, stats.from_store, stats.encoded) == (4, 0, 3)  # prefix + 2 distinct passages
    second, stats = pipeline.context_blocks(PASSAGES)
    assert (stats.blocks, stats.from_store, stats.encoded) == (4, 3, 0)
    for a, b in zip(first, second):
        assert a.token_ids == b.token_ids and (a.keys == b.keys).all() and (a.values == b.values).all()


def test_corrupt_entry_is_re_encoded(default_engine, default_model, tmp_path):
    store = LocalDirectoryStore(tmp_path)
    pipeline = LocalPipeline(default_engine, default_model[1], store)
    pipeline.context_blocks(PASSAGES[:1])
    # each write has an object of its own (kvcache.entry_writer): the index names it
    index = CacheIndex.open(f"sqlite:///{tmp_path / INDEX_FILE}")
    (row,) = index.lookup("default", [block_id_for("default", PASSAGES[0])], default_engine.fingerprint)
    index.close()
    victim = Path(urlsplit(row.location).path)
    data = bytearray(victim.read_bytes())
    data[-10] ^= 0xFF
    victim.write_bytes(bytes(data))
    _, stats = pipeline.context_blocks(PASSAGES[:1])
    assert (stats.corrupt, stats.encoded, stats.from_store) == (1, 1, 1)
    _, stats = pipeline.context_blocks(PASSAGES[:1])
    assert (stats.corrupt, stats.from_store) == (0, 2)


def test_answer_streams_the_engine_greedy_tokens(default_engine, default_model):
    tokenizer = default_model[1]
    pipeline = LocalPipeline(default_engine, tokenizer)
    kvs, _ = pipeline.context_blocks(PASSAGES[:2])
    answer = pipeline.answer(kvs, "Which river runs through Veldmark?", max_new_tokens=16)
    text = "".join(answer)
    final = pipeline.template.final_ids("Which river runs through Veldmark?")
    expected = list(default_engine.generate(kvs, final, max_new_tokens=16))
    assert text == tokenizer.decode(expected, skip_special_tokens=True)
    stats = answer.stats
    assert stats.cached_tokens == sum(kv.num_tokens for kv in kvs)
    assert stats.computed_tokens == len(final) and stats.new_tokens == len(expected)
    assert 0 < stats.ttft_ms <= stats.total_ms


def test_a_new_process_finds_the_blocks_and_the_opening_through_the_index(default_engine, default_model, tmp_path):
    first = LocalPipeline(default_engine, default_model[1], LocalDirectoryStore(tmp_path))
    first.context_blocks(PASSAGES)
    index = CacheIndex.open(f"sqlite:///{tmp_path / INDEX_FILE}")
    rows = index.lookup("default", [block_id_for("default", p) for p in PASSAGES[:2]], default_engine.fingerprint)
    # committed by the writer, with the token counts it measured
    assert [(r.hit, r.token_count) for r in rows] == [(True, len(first.template.block_ids(p))) for p in PASSAGES[:2]]
    # a fresh pipeline (another run of `blockrag local-ask`) encodes nothing, the opening included
    second = LocalPipeline(default_engine, default_model[1], LocalDirectoryStore(tmp_path))
    _, stats = second.context_blocks(PASSAGES)
    assert (stats.blocks, stats.from_store, stats.encoded) == (4, 3, 0)
    blocks = [first.template.prefix_ids()] + [first.template.block_ids(p) for p in PASSAGES]
    assert stats.context_tokens == sum(map(len, blocks))
