"""Structure of code: top-level definitions of Python (by its AST) and of brace languages (by
brace depth, strings and comments skipped), with the comments right above them."""

from __future__ import annotations

import ast
import bisect
import re
import warnings

from blockrag.segment.train.sources.lines import indent_of, is_blank, line_offsets


def _group_heads(units: list[tuple[int, str]]) -> list[int]:
    """Segment heads from (first line, kind) units, kind in block / decl / comment: a block starts a
    segment with the comment units right above it; a run of decls after a block starts one."""
    heads: list[int] = []
    previous = None
    pending: int | None = None
    for line, kind in units:
        if kind == "comment":
            pending = line if pending is None else pending
            continue
        start = pending if pending is not None else line
        pending = None
        if kind == "block" or previous == "block":
            heads.append(start)
        previous = kind
    return heads


def python_heads(text: str, lines: list[str]) -> list[int]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            tree = ast.parse(text)
        except (SyntaxError, ValueError, RecursionError, MemoryError):   # not parseable: no structure
            return []
    heads = _group_heads(_python_units(tree.body, lines))
    total = len(text)
    offsets = line_offsets(lines)
    for node in tree.body:
        if not isinstance(node, ast.ClassDef) or node.end_lineno is None:
            continue
        span = offsets[min(node.end_lineno, len(lines) - 1)] - offsets[node.lineno - 1]
        methods = [n for n in node.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
        if span >= 0.7 * total and len(methods) >= 3:
            inner = _group_heads(_python_units(node.body, lines))
            heads = sorted(set(heads) | set(h for h in inner if h > node.lineno - 1))
            break
    return heads


def _python_units(nodes: list[ast.stmt], lines: list[str]) -> list[tuple[int, str]]:
    units = []
    previous_end = 0
    for node in nodes:
        first = node.lineno
        for decorator in getattr(node, "decorator_list", ()):
            first = min(first, decorator.lineno)
        first -= 1   # 0-based
        indent = indent_of(lines[first]) if first < len(lines) else 0
        while (first - 1 >= previous_end and lines[first - 1].strip().startswith("#")
               and indent_of(lines[first - 1]) == indent):
            first -= 1
        block = isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
        units.append((first, "block" if block else "decl"))
        previous_end = node.end_lineno or node.lineno
    return units


_TOKEN_BASE = r"""\\[{}]|"(?:\\.|[^"\\\n])*"|'(?:\\.|[^'\\\n]){0,4}'|[{}]"""
_TOKEN_SCRIPT = r"""\\[{}]|"(?:\\.|[^"\\\n])*"|'(?:\\.|[^'\\\n])*'|[{}]"""
_SLASH_COMMENTS = r"//[^\n]*|/\*.*?\*/"
_HASH_COMMENTS = r"(?:(?<=\s)|^)#[^\n]*"
DIALECT_TOKENS = {
    "c": re.compile(f"{_SLASH_COMMENTS}|{_TOKEN_BASE}", re.S | re.M),
    "go": re.compile(f"{_SLASH_COMMENTS}|`[^`]*`|{_TOKEN_BASE}", re.S | re.M),
    "js": re.compile(f"{_SLASH_COMMENTS}|`(?:\\\\.|[^`\\\\])*`|{_TOKEN_BASE}", re.S | re.M),
    "sh": re.compile(f"{_HASH_COMMENTS}|{_TOKEN_SCRIPT}", re.S | re.M),
    "perl": re.compile(f"^=[a-zA-Z]\\w*.*?(?:^=cut\\b[^\\n]*|\\Z)|{_HASH_COMMENTS}|{_TOKEN_SCRIPT}", re.S | re.M),
}
_COMMENT_LINE = {"c": ("//", "/*", "*"), "go": ("//", "/*", "*"), "js": ("//", "/*", "*"),
                 "sh": ("#",), "perl": ("#", "=")}


def brace_heads(text: str, lines: list[str], dialect: str) -> list[int]:
    offsets = line_offsets(lines)
    n = len(lines)
    depth_at = [0] * (n + 1)   # brace depth at the start of each line (and after the last)
    in_comment = [False] * n   # the line starts inside a comment or POD
    events: list[tuple[int, int]] = []
    for m in DIALECT_TOKENS[dialect].finditer(text):
        token = m.group()
        if token in ("{", "}"):
            events.append((m.start(), 1 if token == "{" else -1))
        elif len(token) > 1 and "\n" in token and not token.startswith(('"', "'", "`")):
            first, last = bisect.bisect_right(offsets, m.start()), bisect.bisect_right(offsets, m.end() - 1)
            for k in range(first, last):   # lines starting strictly inside the comment
                in_comment[k] = True
    depth, e = 0, 0
    for i in range(n):
        depth_at[i] = depth
        end = offsets[i] + len(lines[i])
        while e < len(events) and events[e][0] <= end:
            depth = max(0, depth + events[e][1])
            e += 1
    depth_at[n] = depth
    markers = _COMMENT_LINE[dialect]

    def comment_only(i: int) -> bool:
        return in_comment[i] or lines[i].lstrip().startswith(markers)

    def units_at(level: int, lo: int, hi: int) -> list[tuple[int, int, str]]:
        """(first line, last line, kind) of the chunks at this depth between lines lo and hi."""
        chunks: list[list[int]] = []
        for i in range(lo, hi):
            if depth_at[i] != level or is_blank(lines[i]):
                continue
            new = not chunks or is_blank(lines[i - 1]) or (i > 0 and depth_at[i - 1] > level)
            if new:
                chunks.append([i, i])
            chunks[-1][1] = i
        # a chunk runs until the next one starts (its deeper lines included)
        result = []
        for k, (first, _) in enumerate(chunks):
            last = (chunks[k + 1][0] if k + 1 < len(chunks) else hi) - 1
            deeper = any(depth_at[j] > level for j in range(first + 1, last + 1))
            if deeper:
                kind = "block"
            elif all(comment_only(j) for j in range(first, last + 1) if not is_blank(lines[j])):
                kind = "comment"
            else:
                kind = "decl"
            result.append((first, last, kind))
        return result

    units = units_at(0, 0, n)
    heads = _group_heads([(first, kind) for first, _, kind in units])
    for first, last, kind in units:   # a block covering most of the file is opened
        if kind != "block":
            continue
        span = offsets[last] + len(lines[last]) - offsets[first]
        if span >= 0.7 * len(text):
            inner = units_at(1, first + 1, last + 1)
            if sum(1 for _, _, k in inner if k == "block") >= 3:
                inner_heads = _group_heads([(f, k) for f, _, k in inner])
                heads = sorted(set(heads) | set(h for h in inner_heads if h > first))
            break
    return heads
