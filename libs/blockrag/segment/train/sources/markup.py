"""Structure of markup and plain text: Markdown/AsciiDoc, reStructuredText and plain-text title
lines, POD `=headN` lines; the long description of a package METADATA file (Markdown or rST)."""

from __future__ import annotations

import re

from blockrag.segment.train.sources.lines import is_blank


_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_ATX = re.compile(r"^ {0,3}#{1,6}(?:[ \t]+\S|$)")
_ADOC_TITLE = re.compile(r"^={1,6}[ \t]+\S")
_SETEXT_UNDER = re.compile(r"^ {0,3}(?:=+|-+)[ \t]*$")
_LIST_ITEM = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s")


def markdown_heads(text: str, lines: list[str]) -> list[int]:
    heads, in_fence = [], False
    for i, line in enumerate(lines):
        if _FENCE.match(line):
            in_fence = not in_fence
            continue
        if in_fence:
            continue
        if _ATX.match(line) or _ADOC_TITLE.match(line):
            heads.append(i)
        elif (i >= 1 and _SETEXT_UNDER.match(line) and not is_blank(lines[i - 1])
              and not _LIST_ITEM.match(lines[i - 1]) and "|" not in lines[i - 1]
              and (i == 1 or is_blank(lines[i - 2]))):
            heads.append(i - 1)
    return heads


_PUNCT_LINE = re.compile(r"^([=\-`:'\"~^_*+#<>.])\1{2,}[ \t]*$")


def rst_heads(text: str, lines: list[str]) -> list[int]:
    heads = []
    for i in range(1, len(lines)):
        under = _PUNCT_LINE.match(lines[i])
        title = lines[i - 1]
        if not under or is_blank(title) or _PUNCT_LINE.match(title) or title[0].isspace():
            continue
        if len(title.rstrip()) > len(lines[i].rstrip()) + 2:
            continue
        over = i >= 2 and lines[i - 2].rstrip() == lines[i].rstrip()
        heads.append(i - 2 if over else i - 1)
    return heads


_UNDERLINE = re.compile(r"^[ \t]*([=\-~*#^+_])\1{2,}[ \t]*$")
_NUMBERED = re.compile(r"^ {0,3}(?:\d{1,2}(?:\.\d{1,2})*\.?|[IVX]{1,5}\.|[A-Z]\.)[ \t]+[A-Z][^\n]{0,76}$")
_CAPS = re.compile(r"^ {0,40}(?=[^a-z]*[A-Z]{3})[A-Z][A-Z0-9 &/,'()\-:.]{2,70}$")
_TITLE = re.compile(r"^ {0,40}[A-Z][\w'’()&/\- ]{1,58}[\w)]$")


def text_heads(text: str, lines: list[str]) -> list[int]:
    """Title lines of plain text: Setext underlines, and isolated title-like lines."""
    heads, titles = [], []
    n = len(lines)
    for i, line in enumerate(lines):
        if is_blank(line) or (i > 0 and not is_blank(lines[i - 1])):
            continue
        if i + 1 < n and _UNDERLINE.match(lines[i + 1]) and not _UNDERLINE.match(line):
            if len(lines[i + 1].strip()) >= 0.6 * len(line.strip()):
                heads.append(i)
            continue
        if i + 2 < n and _UNDERLINE.match(line) and _UNDERLINE.match(lines[i + 2]) and not is_blank(lines[i + 1]):
            heads.append(i)   # overlined and underlined title
            continue
        isolated = i + 1 >= n or is_blank(lines[i + 1])
        if not isolated:
            continue
        words = line.split()
        if _ATX.match(line) or _CAPS.match(line) or (_NUMBERED.match(line) and len(words) <= 10
                                                     and not line.rstrip().endswith((",", ";", ":"))):
            heads.append(i)
        elif _TITLE.match(line) and len(words) <= 8 and _next_paragraph_chars(lines, i + 1) >= 80:
            titles.append(i)
    if len(titles) >= 2:
        heads.extend(titles)
    return sorted(heads)


def _next_paragraph_chars(lines: list[str], i: int) -> int:
    while i < len(lines) and is_blank(lines[i]):
        i += 1
    total = 0
    while i < len(lines) and not is_blank(lines[i]):
        total += len(lines[i].strip())
        i += 1
    return total


_POD_HEAD = re.compile(r"^=head[1-6]\s")


def pod_heads(text: str, lines: list[str]) -> list[int]:
    return [i for i, line in enumerate(lines) if _POD_HEAD.match(line)]


def metadata_description(text: str) -> tuple[str, str]:
    """(long description, its format) of a package METADATA / PKG-INFO file."""
    head, _, body = text.partition("\n\n")
    content_type = ""
    for line in head.split("\n"):
        if line.lower().startswith("description-content-type:"):
            content_type = line.split(":", 1)[1].strip().lower()
    if "markdown" in content_type:
        return body, "markdown"
    if "rst" in content_type:
        return body, "rst"
    lines = body.split("\n")
    return body, ("markdown" if sum(1 for line in lines if _ATX.match(line)) >= 2 else "rst")
