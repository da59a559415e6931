"""Documents: a corpus file read as normalised text with its category and its own structure.

Categories, per file (format first, then content):
  code      a source extension (.py .c .h .js .go .rs .java .sh .pl .awk ...), or an extensionless file
            that opens with a shebang, a C comment or a preprocessor line;
  dialogue  a file named *faq* with at least 3 question entries, or a chat log: >= 30% of the
            non-blank lines are turns (`Name: text`, `<nick> text`, `[12:01] nick: ...`), >= 2 speakers
            who alternate (>= half the turns change speaker), speakers not metadata keys (Author:,
            Date:, License: ... look like turns but are fields);
  docs      markup: Markdown, reStructuredText, HTML, POD, AsciiDoc, man pages, package METADATA;
  prose     other plain text (.txt, README, licences, extensionless files).
"""

from __future__ import annotations

import gzip
import hashlib
import re
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from blockrag.segment.train.sources.chat import is_chat
from blockrag.segment.train.sources.corpus import CODE_EXTS, MARKUP, CorpusSource, format_of, iter_files
from blockrag.segment.train.sources.faq import faq_question_lines
from blockrag.segment.train.sources.html import html_to_text
from blockrag.segment.train.sources.lines import normalize, with_first
from blockrag.segment.train.sources.man import render_man
from blockrag.segment.train.sources.markup import metadata_description
from blockrag.segment.train.sources.structure import structure_starts


MAX_FILE_BYTES = 4_000_000   # a larger file is generated or a dump, not writing
MIN_DOCUMENT_CHARS = 200


@dataclass(frozen=True)
class Document:
    """A file's normalised text. starts: offsets where the document's own segments begin (each the
    first non-blank character of a line; the first is the text's first non-blank character);
    fewer than two means no structure is known."""

    text: str
    category: str
    fmt: str
    source: str
    starts: tuple[int, ...] = field(default=())

    @property
    def structured(self) -> bool:
        return len(self.starts) >= 2


def read_document(path: Path, *, category: str | None = None,
                  max_bytes: int = MAX_FILE_BYTES) -> Document | None:
    """The Document of one file, None when it is not usable text (binary, too large or too small,
    undecodable, minified, a man page that is only a `.so` link, no groff for a man page)."""
    fmt = format_of(path)
    if fmt is None:
        return None
    raw = _read_bytes(path, max_bytes)
    if raw is None or b"\0" in raw[:8192]:
        return None
    if fmt == "man":
        text = render_man(raw)
    else:
        text = _decode(raw)
    if text is None:
        return None
    heading_starts: list[int] | None = None
    question_starts: list[int] = []
    if fmt == "html":
        text, heading_starts, question_starts = html_to_text(text)
    elif fmt == "metadata":
        text, fmt = metadata_description(text)
    if fmt != "html":   # html_to_text normalises block by block, keeping its offsets
        text = normalize(text)
    if len(text) < MIN_DOCUMENT_CHARS:
        return None
    dialect = ""
    if fmt == "code":
        dialect = CODE_EXTS.get(_plain_suffix(path), "plain")
    elif fmt == "text":
        dialect = _sniff_code(text)
        if dialect:
            fmt = "code"
    if fmt == "code" and _looks_minified(text):
        return None
    detected, struct_fmt = _categorize(path, text, fmt, dialect)
    if heading_starts is not None:   # HTML: the converter knows its headings
        starts = sorted(set(heading_starts) | (set(question_starts) if detected == "dialogue" else set()))
        starts = with_first(text, starts)
    else:
        starts = structure_starts(text, struct_fmt)
    return Document(text=text, category=category or detected, fmt=struct_fmt, source=str(path),
                    starts=tuple(starts))


def iter_documents(sources: Sequence[CorpusSource | Path], *,
                   max_bytes: int = MAX_FILE_BYTES) -> Iterator[Document]:
    """Every Document of the sources, in sorted order, duplicates (same text) dropped."""
    seen: set[bytes] = set()
    for source in sources:
        source = source if isinstance(source, CorpusSource) else CorpusSource(Path(source))
        for path in iter_files(source):
            doc = read_document(path, category=source.category, max_bytes=max_bytes)
            if doc is None:
                continue
            digest = hashlib.sha1(doc.text.encode()).digest()
            if digest not in seen:
                seen.add(digest)
                yield doc


def _plain_suffix(path: Path) -> str:
    name = path.name[:-3] if path.name.endswith(".gz") else path.name
    return Path(name).suffix.lower()


def _read_bytes(path: Path, max_bytes: int) -> bytes | None:
    try:
        if not path.is_file():
            return None
        if path.name.endswith(".gz"):
            with gzip.open(path, "rb") as f:
                raw = f.read(max_bytes + 1)
        else:
            if path.stat().st_size > max_bytes:
                return None
            raw = path.read_bytes()
    except (OSError, EOFError, zlib.error):   # unreadable or a corrupt archive: not corpus text
        return None
    return None if len(raw) > max_bytes else raw


def _decode(raw: bytes) -> str | None:
    """UTF-8; else Latin-1 for text that is almost ASCII (old READMEs); else not text."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        high = sum(1 for b in raw if b >= 0x80)
        return raw.decode("latin-1") if high <= 0.02 * len(raw) else None


def _looks_minified(text: str) -> bool:
    lines = [line for line in text.split("\n") if line.strip()]
    return not lines or max(map(len, lines)) > 5000 or sum(map(len, lines)) / len(lines) > 200


_SHEBANG_DIALECT = (("python", "python"), ("perl", "perl"), ("node", "js"), ("sh", "sh"), ("awk", "sh"))


def _sniff_code(text: str) -> str:
    """The code dialect of an extensionless text file, "" when it is not code."""
    first = text.lstrip()[:200]
    if first.startswith("#!"):
        line = first.split("\n", 1)[0]
        return next((dialect for key, dialect in _SHEBANG_DIALECT if key in line), "plain")
    if re.match(r"(/\*|//|#include\b|#ifndef\b|#pragma\b|#define\b)", first):
        return "c"
    return ""


def _categorize(path: Path, text: str, fmt: str, dialect: str) -> tuple[str, str]:
    """(category, structure format) of a file, from its format and content."""
    if fmt == "code":
        return "code", dialect or "plain"
    if "faq" in path.name.lower():
        lines = text.split("\n")
        if len(faq_question_lines(lines)) >= 3 or (fmt in MARKUP and fmt != "man"):
            return "dialogue", ("faq" if fmt == "text" else fmt)
    if fmt in ("text", "markdown") and is_chat(text.split("\n")):
        return "dialogue", "chat"
    if fmt in MARKUP:
        return "docs", fmt
    return "prose", "text"
