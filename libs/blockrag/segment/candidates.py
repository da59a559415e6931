"""Candidate cut points: where a segmenter may cut a text, found by regular-expression separators.

A candidate is a cut between text[:offset] and text[offset:]. Its offset is the START of the next
unit: whitespace after the separator is skipped, so 0 < offset < len(text) and text[offset] is not
whitespace. Every segmenter (the baselines, the trained boundary model) chooses a subset of these
offsets, and the metrics score a segmentation as a set of candidates, so all of them agree on the
atomic units between consecutive candidates.

Kinds, strongest first (where several separators give one offset the strongest kind is kept, so a
heading after a blank line is a "paragraph" candidate; a "heading" candidate is a heading that
follows its previous line directly):

- paragraph: a blank line (spaces, tabs and \\r allowed on it, so CRLF text works);
- heading: before a Markdown ATX heading (`# ...` to `###### ...`), before the title line of a
  Setext/RST heading (a line underlined with ===, ---, ~~~ or ^^^, with an optional overline),
  before an HTML heading tag (<h1> to <h6>);
- code: before an opening ``` or ~~~ fence and after its closing fence; before a top-level
  (column 0) definition: `def`, `async def`, `class`, `function`, `fn`, `func`, optionally after
  `export`/`pub`/... modifiers, and before the decorators (`@...` lines) right above it;
- turn: before a speaker turn: `Name: ...` (one to three capitalised words), `User:`,
  `assistant:`, `Q:`, `A:` (any case), `>>> `, `<nick> ...`, `[12:01] nick: ...`;
- line: after every line break;
- sentence: after [.!?] (closing quotes or brackets may follow) and whitespace, when an
  uppercase letter, a digit or an opening quote comes next (any script: a letter without case,
  as in Chinese or Arabic, counts as uppercase), and the word before the stop is not an
  abbreviation (e.g., i.e., Mr., Dr., etc., a single initial, ...); after a CJK full stop
  (。！？), with or without space.

Inside a fenced code block, headings and turns count as plain lines (a `# comment` is not a
title; an HTML heading tag in the middle of a code line is no candidate) and sentence ends are
not candidates (a string literal is not prose).

Each separator is one compiled pattern scanned once, and each pattern consumes the whitespace
after it, so a 1 MB text takes a fraction of a second.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass

KINDS = ("paragraph", "heading", "code", "turn", "line", "sentence")
_RANK = {kind: rank for rank, kind in enumerate(KINDS)}


@dataclass(frozen=True)
class Candidate:
    """A cut between text[:offset] and text[offset:]; text[offset] is the next unit's first
    non-space character."""

    offset: int
    kind: str


_PARAGRAPH = re.compile(r"\n[^\S\n]*\n\s*")
_LINE = re.compile(r"\n\s*")
_ATX_HEADING = re.compile(r"^[ ]{0,3}#{1,6}(?:[ \t]|$)", re.M)
_RULE = r"[ \t]*(?:={3,}|-{3,}|~{3,}|\^{3,})[ \t]*\r?"
# an optional overline, the title line, the underline: the cut goes before the first of them
_SETEXT_HEADING = re.compile(rf"^(?:{_RULE}\n)?[ \t]*\S[^\n]*\n{_RULE}$", re.M)
_HTML_HEADING = re.compile(r"<h[1-6](?=[\s>])", re.I)
_FENCE = re.compile(r"^[ ]{0,3}(`{3,}|~{3,})([^\n]*)$", re.M)
_DEFINITION = re.compile(
    r"^(?:@[^\n]*\n){0,8}"                                          # decorators stay with their def
    r"(?:(?:export|default|pub(?:\([\w:]+\))?|async|public|private|protected|static|abstract"
    r"|unsafe|const)[ \t]+)*"
    r"(?:(?:def|fn|function\*?|func)[ \t]+[\w$]+[ \t]*[(<]"          # def f(  fn f<  function f(
    r"|func[ \t]*\("                                                # Go method: func (r *T) f(
    r"|class[ \t]+[\w$]+[ \t]*(?:[(:{<]|extends\b|implements\b|$))",
    re.M,
)
_TURN = re.compile(
    r"^[ \t]*(?:"
    r">>>[ \t]"                                                     # REPL prompt
    r"|\[[0-9:/.\- ]{4,24}(?:[ \t]?[AaPp][Mm])?\][ \t]*(?:<[^>\n]{1,32}>|[^\s:\]]{1,32}:)"  # [12:01] nick:
    r"|<[\w.\-|@^`\[\]{}]{1,32}>[ \t]"                              # IRC: <nick> message
    r"|(?i:user|assistant|system|human|ai|bot|q|a)[ \t]*:(?:[ \t]|$)"  # roles, any case
    r"|[A-Z][\w.'\-]*(?:[ \t][A-Z][\w.'\-]*){0,2}[ \t]*:[ \t]"      # Name: / Dr. Smith:
    r")",
    re.M,
)
# a stop, closing quotes/brackets, whitespace, then an opening quote or bracket may come, then an
# uppercase letter or digit (a non-ASCII character is checked in `_opens_sentence`)
_SENTENCE = re.compile(r"[.!?]+[\"'\u201d\u2019)\]]*\s+(?=[\"'\u201c\u2018(\[]?(?:[A-Z0-9]|[^\x00-\x7f]))")
_OPENERS = "\"'\u201c\u2018(["
# CJK full stops end a sentence with no space after them
_CJK_SENTENCE = re.compile(r"[\u3002\uff01\uff1f]+[\u300d\u300f\u201d\u2019\uff09\u300b]*\s*")
_WORD_BEFORE = re.compile(r"[\w.]+$")
_ABBREVIATIONS = frozenset("""
    mr mrs ms dr prof sr jr st mt rev gen col capt lt sgt hon gov sen rep
    vs etc al cf eg ie fig figs eq eqs no nos vol vols pp ch sec approx est ca
    dept inc ltd co corp bros univ assn jan feb mar apr jun jul aug sep sept oct nov dec
""".split())
_INITIALISM = re.compile(r"(?:[A-Za-z]\.){2,}|[A-Z]\.")  # e.g. i.e. U.S. and single initials
_SPACE_RUN = re.compile(r"\s+")


def find_candidates(text: str) -> list[Candidate]:
    """Candidate cuts of `text`, sorted by offset, one per offset (the strongest kind wins)."""
    code_spans = _fenced_code(text)
    code_starts = [start for start, _ in code_spans]
    best: dict[int, int] = {}  # offset -> rank of its strongest kind

    def add(position: int, kind: str) -> None:
        offset = _skip_space(text, position)
        if not 0 < offset < len(text):
            return
        if kind in ("heading", "turn", "sentence") and _inside(code_starts, code_spans, offset):
            return  # a line start inside code is a "line" candidate already
        rank = _RANK[kind]
        if rank < best.get(offset, len(KINDS)):
            best[offset] = rank

    for m in _PARAGRAPH.finditer(text):
        add(m.end(), "paragraph")
    for pattern in (_ATX_HEADING, _SETEXT_HEADING, _HTML_HEADING):
        for m in pattern.finditer(text):
            add(m.start(), "heading")
    for start, end in code_spans:
        add(start, "code")
        add(end, "code")
    for m in _DEFINITION.finditer(text):
        add(m.start(), "code")
    for m in _TURN.finditer(text):
        add(m.start(), "turn")
    for m in _LINE.finditer(text):
        add(m.end(), "line")
    for m in _SENTENCE.finditer(text):
        if _opens_sentence(text, m.end()) and not _after_abbreviation(text, m.start()):
            add(m.end(), "sentence")
    for m in _CJK_SENTENCE.finditer(text):
        add(m.end(), "sentence")
    return [Candidate(offset, KINDS[rank]) for offset, rank in sorted(best.items())]


def units(text: str, candidates: list[Candidate]) -> list[tuple[int, int]]:
    """The atomic (start, end) spans between consecutive candidates: the first starts at 0, the
    last ends at len(text); a unit keeps the whitespace that trails it."""
    bounds = [0, *(c.offset for c in candidates), len(text)]
    return list(zip(bounds[:-1], bounds[1:]))


def _skip_space(text: str, position: int) -> int:
    if position < len(text) and text[position].isspace():
        m = _SPACE_RUN.match(text, position)
        return m.end()
    return position


def _fenced_code(text: str) -> list[tuple[int, int]]:
    """(start, end) of each fenced block: from its opening fence line to just after its closing
    fence line (to the end of the text when the fence is never closed, as Markdown renders it)."""
    spans: list[tuple[int, int]] = []
    opening: re.Match | None = None
    for m in _FENCE.finditer(text):
        if opening is None:
            opening = m
            continue
        fence, rest = m.group(1), m.group(2)
        open_fence = opening.group(1)
        # a closing fence: the same character, at least as long, nothing after it
        if fence[0] == open_fence[0] and len(fence) >= len(open_fence) and not rest.strip():
            spans.append((opening.start(), m.end()))
            opening = None
    if opening is not None:
        spans.append((opening.start(), len(text)))
    return spans


def _inside(starts: list[int], spans: list[tuple[int, int]], offset: int) -> bool:
    """Whether offset lies strictly inside a fenced block (past the start of its opening fence)."""
    i = bisect.bisect_left(starts, offset) - 1
    return i >= 0 and offset < spans[i][1]


def _opens_sentence(text: str, position: int) -> bool:
    """Whether text[position:] starts like a sentence: an uppercase letter, a digit, or a letter
    of a script without case (CJK, Arabic, ...), after an optional opening quote or bracket."""
    if text[position] in _OPENERS:
        position += 1
        if position == len(text):
            return False
    c = text[position]
    return c.isascii() or c.isupper() or c.isdigit() or (c.isalpha() and not c.islower())


def _after_abbreviation(text: str, stop: int) -> bool:
    """Whether the word ending at text[stop] (the first stop character) is an abbreviation."""
    if text[stop] != ".":
        return False
    m = _WORD_BEFORE.search(text, max(0, stop - 24), stop + 1)
    if m is None:
        return False
    word = m.group(0)  # ends with the stop: "e.g.", "Dr.", "2020."
    if _INITIALISM.fullmatch(word):
        return True
    return word.rstrip(".").split(".")[-1].lower() in _ABBREVIATIONS
