"""SemanticSeg-style training data for the boundary classifier: texts whose true cuts are known.

Two kinds of Instance, both 2K-32K tokens by default (tokens estimated as characters / 4):

- "structure": one document cut at its own structure (sections of Markdown/RST/HTML/man pages,
  top-level functions and classes of code, FAQ entries; see blockrag.segment.train.sources). A long
  document gives several windows of consecutive segments; a document without structure gives none.
- "concat": segments of DIFFERENT documents of one category joined with a blank line; the cuts are
  the joins (neighbouring segments always come from different documents). A segment is a
  structural unit (a function, a section) or, where a unit is long or the document has no
  structure, a group of consecutive paragraphs; code units are never split.

Every boundary is the first non-blank character of a line (text[b] is not whitespace and only
spaces or tabs stand between it and the preceding newline), so it coincides with a candidate cut of
blockrag.segment.candidates. Structural segments shorter than min_segment_tokens merge with the
next one (a title with the section under it). Target lengths of instances and of concat segments
are drawn log-uniformly between their bounds, so sizes vary.

Building is deterministic for a seed: the files of the sources are walked in sorted order and
shuffled with random.Random(seed), and every other draw comes from that generator.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import math
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from blockrag.errors import BlockRAGError
from blockrag.segment.train.sources import (
    CATEGORIES,
    MAX_FILE_BYTES,
    CorpusSource,
    Document,
    iter_files,
    read_document,
)

KINDS = ("structure", "concat")
CONCAT_PREFIX = "concat:"
SOURCE_SEPARATOR = " | "   # between the documents of a concat instance's source


class SegmentDataError(BlockRAGError, ValueError):
    """Segmentation data is malformed: a bad instance, a corrupt JSONL line, unusable bounds."""


@dataclass
class Instance:
    """A text and the sorted character offsets of its true cuts (each the start of a segment)."""

    text: str
    boundaries: list[int]
    category: str
    kind: str
    source: str

    @property
    def sources(self) -> list[str]:
        """The documents the text comes from: one path, or every path of a concat instance."""
        if self.source.startswith(CONCAT_PREFIX):
            return self.source[len(CONCAT_PREFIX):].split(SOURCE_SEPARATOR)
        return [self.source]

    @property
    def segments(self) -> list[str]:
        """The text cut at its boundaries, each segment stripped."""
        cuts = [0, *self.boundaries, len(self.text)]
        return [self.text[a:b].strip() for a, b in zip(cuts, cuts[1:])]

    def validate(self) -> None:
        """Raise SegmentDataError unless the fields are consistent and every boundary is the first
        non-blank character of a line."""
        if self.kind not in KINDS:
            raise SegmentDataError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if self.category not in CATEGORIES:
            raise SegmentDataError(f"category must be one of {CATEGORIES}, got {self.category!r}")
        previous = 0
        for b in self.boundaries:
            if not isinstance(b, int) or not previous < b < len(self.text):
                raise SegmentDataError(f"boundaries must be increasing offsets inside the text, got {b!r} "
                                       f"after {previous} (text of {len(self.text)} characters)")
            if not at_line_start(self.text, b):
                raise SegmentDataError(f"boundary {b} is not the first non-blank character of a line: "
                                       f"{self.text[max(0, b - 20):b + 20]!r}")
            previous = b


def at_line_start(text: str, offset: int) -> bool:
    """Whether text[offset] is the first non-blank character of a line that follows a newline."""
    if not 0 < offset < len(text) or text[offset].isspace():
        return False
    j = offset
    while j > 0 and text[j - 1] != "\n" and text[j - 1].isspace():
        j -= 1
    return j > 0 and text[j - 1] == "\n"


@dataclass(frozen=True)
class BuildOptions:
    """Bounds of the data. Lengths are in estimated tokens (characters / chars_per_token).
    min_segment_tokens: shorter structural segments merge with the next; concat segments are
    drawn between min_piece_tokens and max_piece_tokens (at most half of max_tokens).
    oversample: with max_instances, reading stops once this many times as many instances are
    made (the balanced pick is then made among them). pool_pieces: concat segments gathered per
    category before they are shuffled and packed."""

    min_tokens: int = 2000
    max_tokens: int = 32000
    chars_per_token: float = 4.0
    min_segment_tokens: int = 16
    min_piece_tokens: int = 32
    max_piece_tokens: int = 4000
    oversample: int = 3
    pool_pieces: int = 4000
    max_file_bytes: int = MAX_FILE_BYTES

    def __post_init__(self) -> None:
        if not 1 <= self.min_tokens <= self.max_tokens:
            raise SegmentDataError(f"need 1 <= min_tokens <= max_tokens, got {self.min_tokens}, {self.max_tokens}")
        if self.chars_per_token <= 0 or self.min_segment_tokens < 0 or self.min_piece_tokens < 1:
            raise SegmentDataError("chars_per_token and min_piece_tokens must be positive, "
                                   "min_segment_tokens not negative")
        if self.oversample < 1 or self.pool_pieces < 2:
            raise SegmentDataError("oversample must be at least 1 and pool_pieces at least 2")

    def chars(self, tokens: float) -> int:
        return int(tokens * self.chars_per_token)

    @property
    def min_chars(self) -> int:
        return self.chars(self.min_tokens)

    @property
    def max_chars(self) -> int:
        return self.chars(self.max_tokens)

    @property
    def piece_chars(self) -> tuple[int, int]:
        high = self.chars(min(self.max_piece_tokens, self.max_tokens / 2))
        return min(self.chars(self.min_piece_tokens), high), high


def build_instances(
    corpus_dirs: Sequence[Path | CorpusSource],
    *,
    seed: int,
    min_tokens: int = 2000,
    max_tokens: int = 32000,
    max_instances: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    options: BuildOptions | None = None,
) -> list[Instance]:
    """Structure and concat instances from the files under corpus_dirs (directories or files;
    CorpusSource entries carry excludes and a forced category). Deterministic for a seed.
    max_instances: a pick balanced over (category, kind), round robin; None keeps everything.
    progress(files_done, files_total) is called after each file. The token bounds always come
    from min_tokens/max_tokens; options sets the other knobs."""
    opt = dataclasses.replace(options or BuildOptions(), min_tokens=min_tokens, max_tokens=max_tokens)
    if max_instances is not None and max_instances < 1:
        raise SegmentDataError(f"max_instances must be positive, got {max_instances}")
    rng = random.Random(seed)
    sources = [s if isinstance(s, CorpusSource) else CorpusSource(Path(s)) for s in corpus_dirs]
    files = [(path, source.category) for source in sources for path in iter_files(source)]
    rng.shuffle(files)

    made: list[Instance] = []
    pools: dict[str, list[_Piece]] = collections.defaultdict(list)
    seen: set[bytes] = set()
    for done, (path, category) in enumerate(files, 1):
        doc = read_document(path, category=category, max_bytes=opt.max_file_bytes)
        digest = hashlib.sha1(doc.text.encode()).digest() if doc is not None else b""
        if doc is not None and digest not in seen:
            seen.add(digest)
            made.extend(structure_instances(doc, rng, opt))
            pool = pools[doc.category]
            pool.extend(concat_pieces(doc, len(seen), rng, opt))
            if len(pool) >= opt.pool_pieces:
                packed, pools[doc.category] = pack_concat(pool, doc.category, rng, opt, final=False)
                made.extend(packed)
        if progress is not None:
            progress(done, len(files))
        if max_instances is not None and len(made) >= opt.oversample * max_instances:
            break
    for category in list(pools):
        packed, _ = pack_concat(pools[category], category, rng, opt, final=True)
        made.extend(packed)
    chosen = _balanced(made, max_instances, rng) if max_instances is not None else made
    rng.shuffle(chosen)
    for instance in chosen:   # the builder's own contract: cheap, and a broken label costs a training run
        instance.validate()
    return chosen


# -- structure ------------------------------------------------------------------------------------


def merge_small(text: str, starts: Sequence[int], min_chars: int) -> list[int]:
    """Starts left when every segment shorter than min_chars merges with the next one (the last
    one with the previous)."""
    if not starts:
        return []
    kept = [starts[0]]
    for start in starts[1:]:
        if start - kept[-1] >= min_chars:
            kept.append(start)
    if len(kept) >= 2 and len(text.rstrip()) - kept[-1] < min_chars:
        kept.pop()
    return kept


def _segment_spans(doc: Document, opt: BuildOptions) -> list[tuple[int, int]]:
    """(start, end) of the document's structural segments after merging, ends without trailing
    blanks; one span covering the document when it has no structure."""
    text = doc.text
    starts = merge_small(text, doc.starts, opt.chars(opt.min_segment_tokens)) if doc.structured else []
    if len(starts) < 2:
        first = len(text) - len(text.lstrip())
        return [(first, len(text.rstrip()))]
    ends = [_blank_back(text, s) for s in starts[1:]] + [len(text.rstrip())]
    return list(zip(starts, ends))


def structure_instances(doc: Document, rng: random.Random, opt: BuildOptions) -> list[Instance]:
    """Windows of consecutive structural segments of a document, each between the token bounds
    and holding at least two segments; a segment longer than the upper bound ends a window."""
    spans = _segment_spans(doc, opt)
    if len(spans) < 2:
        return []
    out: list[Instance] = []
    a = 0
    while a < len(spans):
        start = spans[a][0]
        if spans[a][1] - start > opt.max_chars:
            a += 1
            continue
        target = _log_uniform(rng, opt.min_chars, opt.max_chars)
        b = a
        while b + 1 < len(spans) and spans[b][1] - start < target and spans[b + 1][1] - start <= opt.max_chars:
            b += 1
        if b > a and spans[b][1] - start >= opt.min_chars:
            out.append(Instance(text=doc.text[start:spans[b][1]],
                                boundaries=[spans[k][0] - start for k in range(a + 1, b + 1)],
                                category=doc.category, kind="structure", source=doc.source))
        a = b + 1
    return out


# -- concat ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Piece:
    """A segment for concat instances; text starts at a line start and ends non-blank."""

    doc: int
    source: str
    text: str


def concat_pieces(doc: Document, doc_id: int, rng: random.Random, opt: BuildOptions) -> list[_Piece]:
    """The document cut into segments for concat instances: its structural units, long ones (and
    a document without structure) cut into groups of paragraphs of drawn sizes. Code units are
    never cut: a function longer than the bound is left out."""
    low, high = opt.piece_chars
    text = doc.text
    pieces = []
    for start, end in _segment_spans(doc, opt):
        line_start = text.rfind("\n", 0, start) + 1
        if doc.category == "code" and doc.structured:
            spans = [(line_start, end)] if low <= end - start <= high else []
        else:
            spans = _paragraph_groups(text, line_start, end, rng, low, high)
        pieces.extend(_Piece(doc_id, doc.source, text[s:e]) for s, e in spans)
    return pieces


def _paragraph_groups(text: str, start: int, end: int, rng: random.Random, low: int,
                      high: int) -> list[tuple[int, int]]:
    """Consecutive paragraphs of text[start:end] grouped up to drawn sizes in [low, high]; a
    paragraph longer than high is left out. Spans start at a line start and end non-blank."""
    paragraphs = _paragraphs(text, start, end)
    groups = []
    i = 0
    while i < len(paragraphs):
        target = _log_uniform(rng, low, high)
        first = paragraphs[i][0]
        j = i
        while j + 1 < len(paragraphs) and paragraphs[j][1] - first < target and paragraphs[j + 1][1] - first <= high:
            j += 1
        if low <= paragraphs[j][1] - first <= high:
            groups.append((first, paragraphs[j][1]))
        i = j + 1
    return groups


def _paragraphs(text: str, start: int, end: int) -> list[tuple[int, int]]:
    """(line start, end without trailing blanks) of the blank-line-separated paragraphs."""
    out = []
    pos = start
    while pos < end:
        while pos < end and text[pos] == "\n":
            pos += 1
        if pos >= end:
            break
        stop = text.find("\n\n", pos, end)
        stop = end if stop < 0 else stop
        stripped = _blank_back(text, stop)
        if stripped > pos and text[pos:stripped].strip():
            out.append((pos, stripped))
        pos = stop
    return out


def pack_concat(pieces: list[_Piece], category: str, rng: random.Random, opt: BuildOptions, *,
                final: bool) -> tuple[list[Instance], list[_Piece]]:
    """Shuffle pieces and pack them into concat instances of drawn lengths, no two neighbouring
    pieces from one document (so every join is a true cut). Returns (instances, pieces left for
    a later call); with final, an unfinished instance that is long enough is emitted and the
    rest dropped."""
    pieces = list(pieces)
    rng.shuffle(pieces)
    pending = collections.deque(pieces)
    out: list[Instance] = []
    current: list[_Piece] = []
    length = 0
    deferred: list[_Piece] = []
    target = _log_uniform(rng, opt.min_chars, opt.max_chars)

    def close() -> None:
        nonlocal current, length, target, deferred
        out.append(_join(current, category))
        current, length = [], 0
        target = _log_uniform(rng, opt.min_chars, opt.max_chars)
        pending.extendleft(reversed(deferred))
        deferred = []

    while pending:
        piece = pending.popleft()
        grown = length + (2 if current else 0) + len(piece.text)
        if grown > opt.max_chars and length >= opt.min_chars and len(current) >= 2:
            pending.appendleft(piece)
            close()
            continue
        if (current and piece.doc == current[-1].doc) or grown > opt.max_chars:
            deferred.append(piece)
            continue
        current.append(piece)
        length = grown
        if length >= target and len(current) >= 2:
            close()
        elif deferred:   # the last piece changed: deferred neighbours of the previous one may fit now
            pending.extendleft(reversed(deferred))
            deferred = []
    if final:
        if length >= opt.min_chars and len(current) >= 2:
            out.append(_join(current, category))
        return out, []
    return out, current + deferred


def _join(pieces: list[_Piece], category: str) -> Instance:
    parts: list[str] = []
    boundaries: list[int] = []
    pos = 0
    for k, piece in enumerate(pieces):
        text = piece.text.lstrip() if k == 0 else piece.text
        if k:
            parts.append("\n\n")
            pos += 2
            boundaries.append(pos + len(text) - len(text.lstrip()))   # after the first line's indent
        parts.append(text)
        pos += len(text)
    source = CONCAT_PREFIX + SOURCE_SEPARATOR.join(piece.source for piece in pieces)
    return Instance(text="".join(parts), boundaries=boundaries, category=category, kind="concat", source=source)


def _blank_back(text: str, pos: int) -> int:
    """pos moved back over whitespace: the end of the text before it, without trailing blanks."""
    while pos > 0 and text[pos - 1].isspace():
        pos -= 1
    return pos


def _log_uniform(rng: random.Random, low: float, high: float) -> int:
    if high <= low:
        return int(low)
    return int(math.exp(rng.uniform(math.log(max(low, 1)), math.log(high))))


def _balanced(instances: list[Instance], limit: int, rng: random.Random) -> list[Instance]:
    """Up to limit instances, taken round robin from the (category, kind) buckets."""
    buckets: dict[tuple[str, str], list[Instance]] = collections.defaultdict(list)
    for instance in instances:
        buckets[(instance.category, instance.kind)].append(instance)
    queues = []
    for key in sorted(buckets):
        rng.shuffle(buckets[key])
        queues.append(collections.deque(buckets[key]))
    chosen: list[Instance] = []
    while len(chosen) < limit and queues:
        queues = [q for q in queues if q]
        for queue in queues:
            if len(chosen) < limit:
                chosen.append(queue.popleft())
    return chosen


# -- files and splits -----------------------------------------------------------------------------


def write_jsonl(path: Path, instances: Iterable[Instance]) -> int:
    """Write one JSON object per line (text, boundaries, category, kind, source); returns the count."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with path.open("w", encoding="utf-8") as f:
        for instance in instances:
            f.write(json.dumps(dataclasses.asdict(instance), ensure_ascii=False) + "\n")
            count += 1
    return count


def read_jsonl(path: Path) -> list[Instance]:
    """The instances of a JSONL file written by write_jsonl, each validated."""
    instances = []
    with Path(path).open(encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                fields = json.loads(line)
                instance = Instance(text=fields["text"], boundaries=list(fields["boundaries"]),
                                    category=fields["category"], kind=fields["kind"], source=fields["source"])
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise SegmentDataError(f"{path}:{number}: not an instance: {e}") from e
            try:
                instance.validate()
            except SegmentDataError as e:
                raise SegmentDataError(f"{path}:{number}: {e}") from e
            instances.append(instance)
    return instances


def split_by_source(instances: Iterable[Instance],
                    held_out: Callable[[str], bool]) -> tuple[list[Instance], list[Instance]]:
    """(kept, held) by the documents the instances come from: held when held_out(path) is true for
    every document, kept when it is false for every one; a concat instance mixing both is dropped,
    so no document is on both sides."""
    kept: list[Instance] = []
    held: list[Instance] = []
    for instance in instances:
        flags = {bool(held_out(source)) for source in instance.sources}
        if flags == {True}:
            held.append(instance)
        elif flags == {False}:
            kept.append(instance)
    return kept, held


def summarize(instances: Iterable[Instance], chars_per_token: float = 4.0) -> dict[str, dict[str, float]]:
    """Per "category/kind": instances, estimated tokens, boundaries, and mean tokens per segment."""
    table: dict[str, dict[str, float]] = {}
    for instance in instances:
        row = table.setdefault(f"{instance.category}/{instance.kind}",
                               {"instances": 0, "tokens": 0, "boundaries": 0})
        row["instances"] += 1
        row["tokens"] += len(instance.text) / chars_per_token
        row["boundaries"] += len(instance.boundaries)
    for row in table.values():
        row["tokens_per_segment"] = row["tokens"] / (row["boundaries"] + row["instances"])
        row["tokens"] = round(row["tokens"])
    return dict(sorted(table.items()))
