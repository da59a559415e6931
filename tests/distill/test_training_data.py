"""Training data without labels, the per-step batches, and the adapter blob."""

from __future__ import annotations

import random
import re

import pytest
import torch
from tiny_models import tiny_model

from blockrag.distill.config import LoraSettings, parse_overrides
from blockrag.distill.data import DataConfig, continuation_examples, mixed_examples, templated_questions
from blockrag.distill.example import Example
from blockrag.distill.training import cached_examples, step_batch
from blockrag.errors import InvalidRequestError, ModelLoadError
from blockrag.models import load_tokenizer
from blockrag.prompt import PromptTemplate

PARAGRAPHS = [f"Paragraph {i} tells of the river Quill{i} and the mill built by Alder{i} in year {1800 + i}. "
              f"The millers of Quill{i} ground grain for the whole valley." for i in range(40)]
DOCUMENT = "\n\n".join(PARAGRAPHS)


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer()


def test_continuations_are_windows_of_consecutive_blocks(tokenizer):
    blocks = PARAGRAPHS[:12]
    config = DataConfig(min_blocks=2, max_blocks=3, final_tokens=4, target_tokens=8)
    examples = list(continuation_examples([blocks], tokenizer, config, random.Random(0)))
    ids = [tokenizer(b + "\n\n", add_special_tokens=False).input_ids for b in blocks]
    assert examples
    position = 0
    for example in examples:
        k = len(example.blocks)
        assert 2 <= k <= 3
        # the context is blocks position..position+k-1, the final block and target the next one
        assert [list(b) for b in example.blocks] == ids[position : position + k]
        following = ids[position + k]
        assert list(example.final) == following[:4] and list(example.target) == following[4:12]
        position += k + 1


def test_templated_questions_ask_about_a_term_only_one_passage_holds():
    pairs = list(templated_questions(PARAGRAPHS, random.Random(1)))
    assert len(pairs) >= 5
    for passages, question in pairs:
        assert 3 <= len(passages) <= 6
        term = next(w.strip("?.,") for w in question.split() if w.startswith(("Quill", "Alder")))
        holders = [p for p in passages if term in p.replace(".", " ").replace(",", " ").split()]
        assert len(holders) == 1, (term, question)


def test_cloze_questions_blank_one_value_of_a_sentence_only_one_passage_holds():
    pairs = list(templated_questions(PARAGRAPHS, random.Random(4), cloze_fraction=1.0))
    assert len(pairs) >= 5
    for passages, question in pairs:
        quoted = question.split('"')[1]
        assert question.count("___") == 1 and quoted.count("___") == 1
        before, after = quoted.split("___")
        found = [m for p in passages for m in [re.search(re.escape(before) + r"(\w+)" + re.escape(after), p)] if m]
        assert len(found) == 1, question  # the sentence is one passage's
        value = found[0].group(1)
        # a number or a name when the sentence has one ("... built by Alder3 in year ___."), else a term
        has_value = re.search(r"\s(\d+|[A-Z][a-z]+)[\s,.]", found[0].group(0))
        assert re.fullmatch(r"\d+|[A-Z][a-z]+", value) if has_value else len(value) >= 5, question


def test_without_clozes_the_questions_are_those_older_examples_files_hold():
    # cloze_fraction 0 draws nothing more from the stream: the same groups and questions as
    # before clozes existed, so an old examples file is rebuilt exactly (its digest matches too)
    pairs = list(templated_questions(PARAGRAPHS, random.Random(1)))[:3]
    assert [(q, [PARAGRAPHS.index(p) for p in g]) for g, q in pairs] == [
        ("According to the documents, what is Alder11?", [23, 2, 11, 1]),
        ("What does the text say about Quill5?", [37, 32, 5, 9, 17, 29]),
        ("Explain Alder34 in one sentence, using the documents.", [34, 20, 38])]


def test_cloze_fraction_mixes_the_two_kinds():
    pairs = list(templated_questions(PARAGRAPHS * 5, random.Random(2), cloze_fraction=0.5))
    clozes = sum("___" in q for _, q in pairs)
    assert 0.25 * len(pairs) < clozes < 0.75 * len(pairs)
    assert all("___" not in q for _, q in templated_questions(PARAGRAPHS * 5, random.Random(2)))


def test_mixed_examples_hold_questions_with_teacher_answers_and_continuations(tokenizer):
    template = PromptTemplate(tokenizer)
    asked = []

    def teacher(prompts):
        asked.extend(prompts)
        return [[7, 8, 9] for _ in prompts]

    config = DataConfig(question_fraction=0.5)
    examples = mixed_examples([DOCUMENT], tokenizer, template, teacher, config, count=10, seed=0)
    assert len(examples) == 10
    questions = [e for e in examples if e.blocks[0] == tuple(template.prefix_ids())]
    assert len(questions) == 5 == len(asked)
    for e in questions:  # the serving prompt: opening block, passages, question; the teacher's answer
        assert e.target == (7, 8, 9)
        assert tokenizer.decode(e.final).startswith("Question: ")
        assert [t for b in e.blocks for t in b] + list(e.final) in asked
    assert all(e.num_tokens <= config.max_example_tokens for e in examples)
    again = mixed_examples([DOCUMENT], tokenizer, template, teacher, config, count=10, seed=0)
    assert again == examples
    calls = []
    batched = mixed_examples([DOCUMENT], tokenizer, template, lambda prompts: calls.append(len(prompts)) or teacher(prompts),
                             config, count=10, seed=0, batch_size=4)
    assert batched == examples and calls == [4, 4]  # the same examples; two calls for five questions


def test_batch_answers_stay_with_their_prompts(tokenizer):
    template = PromptTemplate(tokenizer)
    config = DataConfig(question_fraction=1.0)
    # each answer is a function of its own prompt: a mix-up within a batch changes the targets
    teacher = lambda prompts: [[len(p) % 50 + 1, sum(p) % 97 + 1] for p in prompts]  # noqa: E731
    one = mixed_examples([DOCUMENT], tokenizer, template, teacher, config, count=7, seed=2)
    many = mixed_examples([DOCUMENT], tokenizer, template, teacher, config, count=7, seed=2, batch_size=3)
    assert len(one) == 7 and many == one
    for e in one:
        prompt = [t for b in e.blocks for t in b] + list(e.final)
        assert list(e.target) == [len(prompt) % 50 + 1, sum(prompt) % 97 + 1]


def test_prompts_over_the_budget_are_skipped_before_the_teacher_runs(tokenizer):
    template = PromptTemplate(tokenizer)
    asked = []
    config = DataConfig(question_fraction=1.0, max_example_tokens=200)
    examples = mixed_examples([DOCUMENT], tokenizer, template, lambda prompts: asked.extend(prompts) or [[5] * 50] * len(prompts),
                              config, count=4, seed=0)
    assert all(len(ids) < 200 for ids in asked)
    assert all(e.num_tokens <= 200 for e in examples)


def test_mixed_examples_refuse_text_without_blocks(tokenizer):
    with pytest.raises(InvalidRequestError, match="no usable text"):
        mixed_examples(["tiny"], tokenizer, PromptTemplate(tokenizer), lambda prompts: [[1]] * len(prompts), DataConfig(), 3, 0)


def test_an_examples_file_is_read_back_and_refused_when_built_from_other_inputs(tokenizer, tmp_path):
    model = tiny_model("llama31")  # continuations only: the tiny model never decodes real token ids
    data = DataConfig(question_fraction=0.0, max_blocks=3)
    path = tmp_path / "examples.json.gz"
    built = cached_examples(path, model, tokenizer, [DOCUMENT], 6, 0, data)
    assert len(built) == 6 and path.exists() and not (tmp_path / "examples.json.gz.partial").exists()
    calls = []
    again = cached_examples(path, model, tokenizer, [DOCUMENT], 6, 0, data, progress=lambda *a: calls.append(a))
    assert again == built and calls == []  # read back, not rebuilt
    others = [dict(count=7), dict(seed=1), dict(documents=[DOCUMENT + " Coda."]), dict(model=tiny_model("qwen2")),
              dict(data=DataConfig(question_fraction=0.0, max_blocks=4)),
              dict(data=DataConfig(question_fraction=0.0, max_blocks=3, cloze_fraction=0.5))]
    for change in others:
        args = {"model": model, "documents": [DOCUMENT], "count": 6, "seed": 0, "data": data, **change}
        with pytest.raises(InvalidRequestError, match="another model, corpus, count, seed or data config"):
            cached_examples(path, args["model"], tokenizer, args["documents"], args["count"], args["seed"], args["data"])


def test_step_batches_walk_seeded_epochs():
    examples = [Example.of([[i + 1]], [1], [2]) for i in range(10)]
    first_epoch = [e for s in range(5) for e in step_batch(examples, s, 2, seed=3)]
    assert sorted(e.blocks for e in first_epoch) == sorted(e.blocks for e in examples)  # each once
    assert step_batch(examples, 7, 2, seed=3) == step_batch(examples, 7, 2, seed=3)
    second_epoch = [e for s in range(5, 10) for e in step_batch(examples, s, 2, seed=3)]
    assert [e.blocks for e in second_epoch] != [e.blocks for e in first_epoch]  # reshuffled
    assert step_batch(examples, 0, 2, seed=4) != step_batch(examples, 0, 2, seed=3)


def test_adapter_round_trip_and_merge():
    from blockrag.distill.adapter import Adapter
    from blockrag.distill.student import attach_lora
    from blockrag.models.fingerprint import model_fingerprint

    base = tiny_model("qwen2")
    base_fp = model_fingerprint(base)
    student = attach_lora(tiny_model("qwen2"), LoraSettings(rank=2, target_modules=("q_proj", "up_proj")))
    with torch.no_grad():
        for name, p in student.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.3)
    adapter = Adapter.from_student(student, LoraSettings(rank=2, target_modules=("q_proj", "up_proj")), 11, base_fp)
    again = Adapter.from_bytes(adapter.to_bytes())
    assert again.sink_token_id == 11 and again.lora == adapter.lora and again.base_fingerprint == base_fp
    assert all(torch.equal(again.weights[k], adapter.weights[k]) for k in adapter.weights)
    ids = torch.tensor([[3, 5, 7, 9]])
    with torch.no_grad():
        expected = student(input_ids=ids).logits
    merged = again.merge_into(base)
    with torch.no_grad():
        assert (merged(input_ids=ids).logits - expected).abs().max().item() <= 1e-5
    assert model_fingerprint(merged) != base_fp  # the served version is another version
    with pytest.raises(ModelLoadError, match="another base model"):
        again.merge_into(tiny_model("qwen2", seed=1))
    with pytest.raises(ModelLoadError, match="not a readable adapter|not a blockrag adapter"):
        Adapter.from_bytes(b"garbage")


@pytest.mark.parametrize("bits, bound", [(8, 1 / 254), (4, 1 / 14)])
def test_quantized_adapter_weights_are_within_half_a_step_of_the_originals(bits, bound):
    """Each value comes back within half a quantization step (step = the group's max |w| /
    levels); shapes that are not a multiple of the group size survive; the blob shrinks."""
    from blockrag.distill.adapter import GROUP, Adapter

    g = torch.Generator().manual_seed(0)
    weights = {"a.lora_A.weight": torch.randn(3, 50, generator=g), "b.lora_B.weight": torch.randn(70, 2, generator=g) * 1e-3}
    adapter = Adapter(weights, LoraSettings(rank=2), 0, "fp")
    back = Adapter.from_bytes(adapter.to_bytes(bits))
    assert back.sink_token_id == 0 and back.base_fingerprint == "fp" and back.lora == adapter.lora
    for k, w in weights.items():
        assert back.weights[k].shape == w.shape and back.weights[k].dtype == torch.float32
        flat = torch.nn.functional.pad(w.reshape(-1), (0, -w.numel() % GROUP)).reshape(-1, GROUP)
        group_max = flat.abs().amax(dim=1, keepdim=True).expand(-1, GROUP).reshape(-1)[: w.numel()]
        error = (back.weights[k] - w).reshape(-1).abs()
        assert bool((error <= group_max * bound * (1 + 1e-5)).all())
        assert error.max() > 0  # lossy: it did quantize
    large = Adapter({"c.lora_A.weight": torch.randn(16, 1024, generator=g)}, LoraSettings(rank=16), None, "fp")
    assert len(large.to_bytes(bits)) < len(large.to_bytes()) * (bits + 1) / 32
    with pytest.raises(InvalidRequestError, match="32, 8 or 4"):
        adapter.to_bytes(16)


def test_parse_overrides():
    assert parse_overrides(["steps=50", "sink_token=null", "sink_token2=<s>", 'lora={"rank": 8}']) == {
        "steps": 50, "sink_token": None, "sink_token2": "<s>", "lora": {"rank": 8}}
    with pytest.raises(InvalidRequestError, match="KEY=VALUE"):
        parse_overrides(["steps"])
