"""Dialogue data (issue 10): conversations joined with the speaker alternation unbroken, so only
content tells a join; turns never span paragraphs; nothing forbidden is read."""

from __future__ import annotations

import random
import re

import pytest

from blockrag.segment.candidates import find_candidates
from blockrag.segment.train.dialogue import (
    SPEAKERS,
    dialogue_instances,
    is_prose,
    join_conversations,
    turns_of,
)
from blockrag.segment.train.prose import ProseDoc

_TURN = re.compile(r"^(\w+): (.+)$")


def letters(n: int) -> str:
    """n spelled in letters (digits would make a paragraph read as code to is_prose)."""
    return "".join(chr(ord("a") + int(d)) for d in str(n))


def sentence(tag: str, n: int = 12) -> str:
    return "Word " + " ".join(f"{tag}w{letters(i)}" for i in range(n)) + "."


def paragraph(tag: str, sentences: int = 3) -> str:
    return " ".join(sentence(f"{tag}s{letters(k)}") for k in range(sentences))


DOCS = [ProseDoc(f"/usr/share/doc/pkg{d}/README", "test", tuple(
    tuple(paragraph(f"d{letters(d)}x{letters(s)}p{letters(p)}") for p in range(4)) for s in range(2))) for d in range(10)]


def test_speakers_alternate_across_joins_and_cuts_start_conversations():
    text, cuts = join_conversations([["one a", "one b", "one c"], ["two a"], ["three a", "three b"]])
    lines = text.rstrip("\n").split("\n")
    speakers = [_TURN.match(line).group(1) for line in lines]
    assert speakers == [SPEAKERS[i % 2] for i in range(6)]  # one, two, three: no restart at a join
    assert [text[c:].split("\n")[0] for c in cuts] == [f"{SPEAKERS[1]}: two a", f"{SPEAKERS[0]}: three a"]
    # a join is the same single newline as every other turn break: a candidate of the same kind
    kinds = {c.offset: c.kind for c in find_candidates(text)}
    line_starts = [m.end() for m in re.finditer("\n", text.rstrip("\n"))]
    assert {kinds[o] for o in line_starts} == {kinds[cuts[0]]}


def test_turns_never_span_paragraphs():
    rng = random.Random(0)
    first, second = paragraph("pa", 5), paragraph("pb", 5)
    turns = turns_of([first, second], rng)
    assert all(not ("pas" in t and "pbs" in t) for t in turns)
    assert " ".join(turns).split() == (first + " " + second).split()
    assert len(turns) < 10  # some turns hold several sentences


def test_instances_join_distinct_documents_and_validate():
    instances = dialogue_instances(DOCS, 12, seed=0)
    assert len(instances) == 12
    for instance in instances:
        instance.validate()
        assert instance.category == "dialogue" and instance.kind == "concat"
        assert len(set(instance.sources)) == len(instance.sources) == len(instance.boundaries) + 1
        # each conversation's turns come from one document: the tags d<k> agree within a segment
        for segment in instance.segments:
            assert len(set(re.findall(r"\bd([a-j]+)x", segment))) == 1


def test_forbidden_documents_refused():
    with pytest.raises(ValueError, match="may not be"):
        dialogue_instances([ProseDoc("/usr/share/common-licenses/GPL-3", "GPL", (("Some text here.",),))], 1, seed=0)


@pytest.mark.parametrize("text,expected", [
    ("This is a sentence that somebody could say in a chat, and it ends.", True),
    ("fn main() {\n    println!(\"hello\");\n}", False),
    ("- an item of a list that goes on for a while and then ends.", False),
    ("Too short.", False),
])
def test_is_prose(text, expected):
    assert is_prose(text) is expected
