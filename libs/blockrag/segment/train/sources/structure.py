"""Where a document's own segments begin, by its structure format (the readers' parsers, one
module per kind of source, do the work).

Structure (segment starts, each the first non-blank character of a line; a document with fewer than
two segments has no structure):
  markdown/asciidoc  ATX (`# `, `= `) and Setext headings outside code fences;
  rst                titles with an underline (and optional overline) of repeated punctuation;
  html               h1-h6 (the converter keeps their offsets), dt/question entries in FAQs;
  pod                `=headN` lines;  man: section headings (column 0 of the rendered page);
  text               Setext underlines, isolated numbered / CAPITALISED / `#` title lines, and short
                     isolated title lines when a document has at least two of them;
  python             top-level def/class with their decorators and the comments right above them;
                     a run of other statements after a def/class starts a segment too; a class
                     covering most of the file is opened and its methods are the units;
  brace languages    top-level blank-line-separated chunks, by brace depth (strings and comments
                     skipped): a chunk that opens a block starts a segment with the comment chunks
                     above it, a run of declarations after a block starts one; a single block
                     covering most of the file (a Java class, a namespace) is opened;
  faq                a question (a line ending in `?`, or a numbered / `Q:` entry) after a blank line,
                     followed by an answer; plus the headings;
  chat               `Q:` turns for Q/A logs; otherwise only explicit separators: a blank line where
                     turns are otherwise contiguous, rule lines (---, ***), headings, date lines. Where
                     turns are all separated by blank lines and there are no separators, a chat log
                     has no structure: a topic change cannot be known from the text.
"""

from __future__ import annotations

from blockrag.segment.train.sources.chat import chat_heads
from blockrag.segment.train.sources.code import DIALECT_TOKENS, brace_heads, python_heads
from blockrag.segment.train.sources.faq import faq_heads
from blockrag.segment.train.sources.lines import first_nonblank, line_offsets, with_first
from blockrag.segment.train.sources.man import man_heads
from blockrag.segment.train.sources.markup import markdown_heads, pod_heads, rst_heads, text_heads


def structure_starts(text: str, fmt: str) -> list[int]:
    """Offsets where the segments of a document in this structure format begin (see the module
    docstring); the first is the text's first non-blank character. [] or one start: no structure."""
    lines = text.split("\n")
    offsets = line_offsets(lines)
    finder = _LINE_FINDERS.get(fmt)
    if finder is None:
        return []
    heads = finder(text, lines)
    return with_first(text, [first_nonblank(text, offsets[i]) for i in heads])


_LINE_FINDERS = {
    "markdown": markdown_heads,
    "asciidoc": markdown_heads,
    "metadata": text_heads,
    "rst": rst_heads,
    "text": text_heads,
    "pod": pod_heads,
    "man": man_heads,
    "faq": faq_heads,
    "chat": chat_heads,
    "python": python_heads,
    **{dialect: (lambda text, lines, d=dialect: brace_heads(text, lines, d)) for dialect in DIALECT_TOKENS},
}
