"""Prose training data that only content can segment (issue 10): Choi-style concatenations and
documents with their headings removed, every join the same blank line as every paragraph break.

Sources (offline, openly licensed; `PROSE_SOURCES` records each licence):
- the Python language reference topics of `pydoc_data.topics` (CPython, PSF-2.0);
- docstrings of the CPython standard library (PSF-2.0), one document per module;
- plain text, Markdown, reStructuredText and HTML under /usr/share/doc (Debian package
  documentation, each under its package's /usr/share/doc/<pkg>/copyright, Debian main).

Never drawn from (`forbidden`): the Debian FAQ, /usr/share/common-licenses and manual pages (also
their sources or renderings under /usr/share/doc), which the hidden acceptance set of
/work/shared/segmentation/README.md comes from; nor prose-dev.jsonl itself.

A ProseDoc is a document's sections, each a list of paragraphs with heading paragraphs dropped.
- `choi_instances`: 4-10 segments of 1-4 consecutive paragraphs (50-600 words) of one section,
  each from a different document; the cuts are the joins.
- `stripped_instances`: windows of consecutive sections of one document; the cuts are the
  section starts (where the removed headings stood).
"""

from __future__ import annotations

import ast
import inspect
import random
import re
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from blockrag.segment.train.data import CONCAT_PREFIX, SOURCE_SEPARATOR, Instance
from blockrag.segment.train.sources import CorpusSource, iter_files, read_document

PSF = "PSF-2.0"
DEBIAN_DOC = "per package: /usr/share/doc/<package>/copyright (Debian main, DFSG-free)"
PROSE_SOURCES = {
    "pydoc_data.topics": PSF,
    "CPython standard library docstrings": PSF,
    "/usr/share/doc": DEBIAN_DOC,
}
_FORBIDDEN = re.compile(
    r"^/usr/share/common-licenses(/|$)|^/usr/share/man(/|$)|^/usr/share/doc/debian(/|$)"
    r"|debian-faq|debian_faq|/man[1-9][a-z]?/"
    r"|[A-Za-z_+-]\.[1-9][a-z]?(\.(txt|md|rst|html?|xml|adoc|pod|in))?(\.gz)?$"   # man page (source, rendering)
    r"|/copyright$|/common-licenses/", re.I)
_PARAGRAPH_BREAK = re.compile(r"\n[^\S\n]*\n\s*")
_RULE_LINE = re.compile(r"^\s*([=\-~^*+#\"'`:.])\1{2,}\s*$")
_ATX = re.compile(r"^\s{0,3}#{1,6}\s")
_DOC_FORMATS = {"text", "markdown", "rst", "html", "asciidoc"}


def forbidden(source: str) -> bool:
    """Whether a document may never be training data: the Debian FAQ, licence texts, man pages."""
    return bool(_FORBIDDEN.search(str(source)))


@dataclass(frozen=True)
class ProseDoc:
    """A document's sections, each a list of stripped paragraphs (headings dropped)."""

    source: str
    license: str
    sections: tuple[tuple[str, ...], ...]


def is_heading(paragraph: str) -> bool:
    """A Markdown ATX heading, an RST/Setext title (a line with an underline, optional overline),
    or a single short line without closing punctuation (a plain-text title)."""
    lines = [line for line in paragraph.split("\n") if line.strip()]
    if not lines:
        return True
    if _ATX.match(lines[0]) and len(lines) == 1:
        return True
    if len(lines) <= 3 and _RULE_LINE.match(lines[-1]) and all(len(l.split()) <= 14 for l in lines):
        return True
    return len(lines) == 1 and len(lines[0].split()) <= 10 and not lines[0].rstrip().endswith((".", ":", ",", ";"))


def split_sections(text: str, starts: Sequence[int] = ()) -> tuple[tuple[str, ...], ...]:
    """Sections of text cut at `starts` (and at any heading paragraph), each its paragraphs with
    the headings and rule lines dropped; empty sections dropped."""
    cuts = sorted({0, *starts, len(text)})
    sections: list[list[str]] = []
    for a, b in zip(cuts, cuts[1:]):
        current: list[str] = []
        for paragraph in _PARAGRAPH_BREAK.split(text[a:b]):
            paragraph = "\n".join(line.rstrip() for line in paragraph.strip("\n").split("\n")).strip()
            if not paragraph or _RULE_LINE.match(paragraph):
                continue
            if is_heading(paragraph):
                if current:
                    sections.append(current)
                current = []
                continue
            current.append(paragraph)
        if current:
            sections.append(current)
    return tuple(tuple(s) for s in sections)


def pydoc_topics() -> Iterator[ProseDoc]:
    """The Python language reference topics shipped with CPython (pydoc_data.topics, PSF-2.0)."""
    from pydoc_data.topics import topics

    for name in sorted(topics):
        sections = split_sections(topics[name])
        if sections:
            yield ProseDoc(f"pydoc_data.topics:{name}", PSF, sections)


def stdlib_docstrings(min_words: int = 40) -> Iterator[ProseDoc]:
    """One document per standard-library module: each docstring of at least min_words words is a
    section (module, classes, functions), PSF-2.0."""
    lib = Path(sys.base_prefix) / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}"
    skip = ("site-packages", "test", "tests", "idlelib", "lib2to3", "__pycache__", "turtledemo")
    for path in sorted(lib.rglob("*.py")):
        if any(part in skip for part in path.relative_to(lib).parts):
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                tree = ast.parse(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, SyntaxError, ValueError):   # not readable Python: no docstrings
            continue
        nodes = [tree] + [n for n in ast.walk(tree) if isinstance(n, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))]
        sections = []
        for node in nodes:
            doc = ast.get_docstring(node, clean=False)
            if doc and len(doc.split()) >= min_words:
                sections.extend(split_sections(inspect.cleandoc(doc)))
        if sections:
            yield ProseDoc(f"stdlib:{path.relative_to(lib)}", PSF, tuple(sections))


def debian_docs(root: Path = Path("/usr/share/doc"), limit: int | None = None,
                seed: int = 0) -> Iterator[ProseDoc]:
    """Prose and markup documents under /usr/share/doc (not code, not changelogs, nothing
    `forbidden`), in a seeded random order, at most `limit`."""
    from blockrag.segment.train.sources import TRAIN_SOURCES

    excludes = next((s.exclude for s in TRAIN_SOURCES if s.path == Path("/usr/share/doc")), ())
    files = [p for p in iter_files(CorpusSource(root, None, DEBIAN_DOC, exclude=excludes)) if not forbidden(str(p))]
    random.Random(seed).shuffle(files)
    made = 0
    for path in files:
        if limit is not None and made >= limit:
            return
        doc = read_document(path)
        if doc is None or doc.category not in ("prose", "docs") or doc.fmt not in _DOC_FORMATS:
            continue
        sections = split_sections(doc.text, doc.starts)
        if sum(len(p.split()) for s in sections for p in s) >= 80:
            made += 1
            yield ProseDoc(str(path), DEBIAN_DOC, sections)


def _words(paragraphs: Sequence[str]) -> int:
    return sum(len(p.split()) for p in paragraphs)


def segments_of(doc: ProseDoc, rng: random.Random, words: tuple[int, int] = (50, 600),
                paragraphs: tuple[int, int] = (1, 4)) -> list[tuple[str, ...]]:
    """Runs of consecutive paragraphs of one section, each of a drawn paragraph count whose word
    count falls in `words`."""
    out = []
    for section in doc.sections:
        i = 0
        while i < len(section):
            count = rng.randint(*paragraphs)
            run = section[i:i + count]
            if words[0] <= _words(run) <= words[1]:
                out.append(tuple(run))
            i += count
    return out


def _join(parts: Sequence[Sequence[str]]) -> tuple[str, list[int]]:
    """Text of the parts (each a list of paragraphs), every break one blank line; the cut offsets
    at the start of every part after the first."""
    text, cuts = "", []
    for k, paragraphs in enumerate(parts):
        if k:
            text += "\n\n"
            cuts.append(len(text))
        text += "\n\n".join(paragraphs)
    return text, cuts


def choi_instances(docs: Sequence[ProseDoc], n: int, seed: int, segments: tuple[int, int] = (4, 10),
                   per_doc: int = 3) -> list[Instance]:
    """n Choi-style instances: each joins a drawn number of segments from distinct documents."""
    return concat_instances(docs, n, seed, segments, per_doc, segments_of, _join, "prose", "training")


def concat_instances(docs: Sequence[ProseDoc], n: int, seed: int, segments: tuple[int, int], per_doc: int,
                     pieces_of: Callable[[ProseDoc, random.Random], list], join: Callable[[list], tuple[str, list[int]]],
                     category: str, use: str) -> list[Instance]:
    """n instances, each joining a drawn number of pieces (`pieces_of` a document, at most
    per_doc of each) from distinct documents with `join` -> (text, cuts); a forbidden source
    raises (`use` says for what)."""
    rng = random.Random(seed)
    pool: list[tuple[str, object]] = []
    for doc in docs:
        if forbidden(doc.source):
            raise ValueError(f"{doc.source} may not be {use} data")
        found = pieces_of(doc, rng)
        rng.shuffle(found)
        pool.extend((doc.source, piece) for piece in found[:per_doc])
    out = []
    for _ in range(n):
        count = rng.randint(*segments)
        chosen: list[tuple[str, object]] = []
        used: set[str] = set()
        for source, piece in rng.sample(pool, min(len(pool), count * 4)):
            if source not in used:
                used.add(source)
                chosen.append((source, piece))
            if len(chosen) == count:
                break
        if len(chosen) < 2:
            continue
        text, cuts = join([piece for _, piece in chosen])
        out.append(Instance(text, cuts, category, "concat",
                            CONCAT_PREFIX + SOURCE_SEPARATOR.join(source for source, _ in chosen)))
    return out


def stripped_instances(docs: Sequence[ProseDoc], seed: int, words: tuple[int, int] = (400, 3000),
                       min_section_words: int = 30) -> list[Instance]:
    """Windows of consecutive sections of each document (drawn lengths in `words`, at least two
    sections), headings removed; a section under min_section_words joins the next."""
    rng = random.Random(seed)
    out = []
    for doc in docs:
        if forbidden(doc.source):
            raise ValueError(f"{doc.source} may not be training data")
        sections: list[list[str]] = []
        for section in doc.sections:
            if sections and _words(sections[-1]) < min_section_words:
                sections[-1].extend(section)
            else:
                sections.append(list(section))
        i = 0
        while i < len(sections):
            target = int(rng.uniform(*words))
            j = i + 1
            while j < len(sections) and _words([p for s in sections[i:j] for p in s]) < target:
                j += 1
            if j - i >= 2:
                text, cuts = _join(sections[i:j])
                out.append(Instance(text, cuts, "prose", "structure", doc.source))
            i = j
    return out


def build_prose(seed: int = 0, choi: int = 200, stripped: int = 100, debian_limit: int = 500) -> list[Instance]:
    """The prose training set: `choi` Choi-style instances over every prose source, then
    `stripped` heading-stripped windows (language reference topics and /usr/share/doc; docstrings
    have no headings to strip), each part deterministic for the seed."""
    docs = [*pydoc_topics(), *stdlib_docstrings(), *debian_docs(limit=debian_limit, seed=seed)]
    concatenated = choi_instances(docs, choi, seed=seed)
    windows = stripped_instances([d for d in docs if not d.source.startswith("stdlib:")], seed=seed)
    random.Random(seed).shuffle(windows)
    return concatenated + windows[:stripped]
