"""Line helpers of the corpus readers: normalised text, line offsets, blank lines, indentation."""

from __future__ import annotations

import re


_CONTROL = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f]")
_TRAILING = re.compile(r"[^\S\n]+$", re.M)   # any whitespace but the newline (NBSP, form feed...)
_LINE_BREAKS = re.compile("\r\n?|[\x85\u2028\u2029]")


def normalize(text: str) -> str:
    """Unix line ends, no control characters but tab, newline and form feed, no trailing blanks
    on lines (so a blank line is empty) or at the end, no leading blank lines."""
    text = _LINE_BREAKS.sub("\n", text)
    text = _CONTROL.sub("", text)
    text = _TRAILING.sub("", text)
    return text.strip("\n").rstrip()


def line_offsets(lines: list[str]) -> list[int]:
    offsets, pos = [], 0
    for line in lines:
        offsets.append(pos)
        pos += len(line) + 1
    return offsets


def first_nonblank(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] != "\n" and text[pos].isspace():
        pos += 1
    return pos


def with_first(text: str, starts: list[int]) -> list[int]:
    """Sorted unique starts, each at a non-blank character, with the text's first one added."""
    first = len(text) - len(text.lstrip())
    valid = {s for s in starts if first < s < len(text) and not text[s].isspace()}
    return [first, *sorted(valid)] if valid else []


def is_blank(line: str) -> bool:
    return not line.strip()


def indent_of(line: str) -> int:
    return len(line) - len(line.lstrip(" \t"))
