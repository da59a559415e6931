"""Dialogue that only content can segment (issue 10): conversations joined where the speaker
pattern gives nothing away.

Nothing on this machine is an openly licensed conversation (segment/train/sources/corpus.py), so the
conversations are synthetic, made from prose the project already uses: a conversation is a run
of consecutive paragraphs of one section of one document, cut into turns of 1-3 sentences that
two speakers take in alternation, one turn a line (`Ann: ...` / `Ben: ...`). An instance joins
4-8 conversations (80-400 words each) of different documents, Choi-style; the alternation runs on across every join
and every turn, joins included, ends with the same single newline, so neither the layout nor the
speaker tells where a conversation ends: only what is talked about.

Sources, by split (never a `forbidden` document: the Debian FAQ, licence texts, man pages):
- train: the prose sources of train/prose.py (Python language reference topics and standard-
  library docstrings, PSF-2.0; /usr/share/doc, per package copyright, Debian main);
- held_out: the Rust toolchain's books (HTML; MIT OR Apache-2.0), a held-out source of
  segment/train/sources/corpus.py that no shipped head trained on.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator, Sequence

from blockrag.segment.train.data import Instance
from blockrag.segment.train.prose import ProseDoc, concat_instances, split_sections

SPEAKERS = ("Ann", "Ben")
RUST_LICENSE = "MIT OR Apache-2.0"
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'(])")
_PROSE_LINE = re.compile(r"^[A-Z\"'(].*[.!?:)\"']$")


def is_prose(paragraph: str) -> bool:
    """A paragraph that reads as something said: one flowing text that starts like a sentence and
    ends with a stop, mostly words (code listings, tables and lists are not said in a chat)."""
    flat = " ".join(paragraph.split())
    if len(flat.split()) < 8 or not _PROSE_LINE.match(flat):
        return False
    letters = sum(ch.isalpha() or ch.isspace() for ch in flat)
    return letters / len(flat) > 0.85 and not any(line.lstrip().startswith(("-", "*", "|", "$", ">"))
                                                   for line in paragraph.split("\n"))


def turns_of(paragraphs: Sequence[str], rng: random.Random, sentences: tuple[int, int] = (1, 3)) -> list[str]:
    """The paragraphs' sentences grouped into turns of a drawn number of sentences (one line each);
    a turn never spans two paragraphs."""
    turns = []
    for paragraph in paragraphs:
        said = _SENTENCE_END.split(" ".join(paragraph.split()))
        i = 0
        while i < len(said):
            count = rng.randint(*sentences)
            turns.append(" ".join(said[i:i + count]))
            i += count
    return turns


def conversations_of(doc: ProseDoc, rng: random.Random, words: tuple[int, int] = (80, 400),
                     paragraphs: tuple[int, int] = (1, 4)) -> list[list[str]]:
    """Runs of consecutive prose paragraphs of one section (drawn paragraph counts, `words` words
    in all), each as its turns."""
    out = []
    for section in doc.sections:
        said = [p for p in section if is_prose(p)]
        i = 0
        while i < len(said):
            run = said[i:i + rng.randint(*paragraphs)]
            if words[0] <= sum(len(p.split()) for p in run) <= words[1]:
                out.append(turns_of(run, rng))
            i += len(run)
    return out


def join_conversations(conversations: Sequence[Sequence[str]]) -> tuple[str, list[int]]:
    """One turn a line, the speakers alternating across the joins; the cut offsets at the first
    turn of every conversation after the first."""
    lines, cuts, length = [], [], 0
    for k, turns in enumerate(conversations):
        for t, turn in enumerate(turns):
            line = f"{SPEAKERS[len(lines) % 2]}: {turn}"
            if k and t == 0:
                cuts.append(length)
            lines.append(line)
            length += len(line) + 1
    return "\n".join(lines) + "\n", cuts


def dialogue_instances(docs: Sequence[ProseDoc], n: int, seed: int, segments: tuple[int, int] = (4, 8),
                       per_doc: int = 3) -> list[Instance]:
    """n instances, each joining a drawn number of conversations from distinct documents."""
    return concat_instances(docs, n, seed, segments, per_doc, conversations_of, join_conversations, "dialogue",
                            "training or evaluation")


def rust_book_docs() -> Iterator[ProseDoc]:
    """The Rust toolchain's books (held out from every shipped head), one document per HTML page,
    its sections cut at its headings."""
    from blockrag.segment.train.sources import HELD_OUT_SOURCES, iter_files, read_document

    for source in HELD_OUT_SOURCES:
        if source.license != RUST_LICENSE or not source.path.exists():
            continue
        for path in iter_files(source):
            doc = read_document(path)
            if doc is None:
                continue
            sections = split_sections(doc.text, doc.starts)
            if sections:
                yield ProseDoc(str(path), RUST_LICENSE, sections)


def build_dialogue(split: str = "train", n: int = 100, seed: int = 0, debian_limit: int = 500) -> list[Instance]:
    """`n` dialogue instances of a split's sources (module docstring), deterministic for a seed."""
    from blockrag.segment.train.prose import debian_docs, pydoc_topics, stdlib_docstrings

    if split == "train":
        docs = [*pydoc_topics(), *stdlib_docstrings(), *debian_docs(limit=debian_limit, seed=seed)]
    elif split == "held_out":
        docs = list(rust_book_docs())
    else:
        raise ValueError(f"split must be train or held_out, got {split!r}")
    return dialogue_instances(docs, n, seed=seed)
