"""TextStream: token ids in, printable pieces out, never half a character."""

from __future__ import annotations

import pytest

from blockrag.text_stream import TextStream


@pytest.mark.parametrize("text", [
    "Zürich – 東京 ✓",
    "emoji 🧭🇸🇪 end",
    "Hello , world . it 's don 't ?",  # no clean-up of spaces that would rewrite earlier text
    "plain ascii",
])
def test_pieces_add_up_to_the_decoded_text(default_model, text):
    tokenizer = default_model[1]
    ids = tokenizer(text, add_special_tokens=False).input_ids
    stream = TextStream(tokenizer)
    pieces = [stream.push(token) for token in ids]
    decoded = tokenizer.decode(ids, skip_special_tokens=True)
    assert decoded == text
    assert "".join(pieces) == decoded
    assert stream.text == decoded
    assert not any("\ufffd" in piece for piece in pieces)


def test_unfinished_characters_wait_for_their_last_token(default_model):
    tokenizer = default_model[1]
    ids = tokenizer("東京", add_special_tokens=False).input_ids
    assert len(ids) > 2  # byte-level: the characters span several tokens
    stream = TextStream(tokenizer)
    pieces = [stream.push(token) for token in ids]
    assert "" in pieces
    assert pieces[-1] != ""
    assert "".join(pieces) == "東京"


def test_special_tokens_are_skipped(default_model):
    tokenizer = default_model[1]
    ids = tokenizer("Hi", add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
    stream = TextStream(tokenizer)
    assert [stream.push(token) for token in ids][-1] == ""
    assert stream.text == "Hi"
