"""FAQs: a question after a blank line, followed by its answer, starts an entry."""

from __future__ import annotations

import re

from blockrag.segment.train.sources.lines import indent_of, is_blank
from blockrag.segment.train.sources.markup import text_heads


_QUESTION_PREFIX = re.compile(r"^ {0,3}(?:Q(?:uestion)?\s*\d*\s*[:.)]\s*|\d{1,2}(?:\.\d{1,2})*[.)]?\s+|[-*]\s+)?")
_NUMBERED_ENTRY = re.compile(r"^ {0,3}\d{1,2}(?:\.\d{1,2})*[.)]?\s+\S")
_TOC_LINE = re.compile(r"^\s{0,3}\d{1,2}(?:\.\d{1,2})+")
_ANSWER = re.compile(r"^\s*A(?:nswer)?\s*[:.)]\s")


def faq_question_lines(lines: list[str]) -> list[int]:
    """Lines that open a FAQ entry: after a blank line, at most 3 columns in, a question (ending
    in `?` within 3 lines) or a numbered / `Q:` entry, followed by an answer (a more indented
    line or `A:`; for questions any non-question line that is not a table-of-contents entry)."""
    found = []
    n = len(lines)
    for i, line in enumerate(lines):
        if is_blank(line) or indent_of(line) > 3 or (i > 0 and not is_blank(lines[i - 1])):
            continue
        end = next((j for j in range(i, min(i + 3, n)) if not is_blank(lines[j]) and lines[j].rstrip().endswith("?")),
                   None)
        if end is not None and any(is_blank(lines[j]) for j in range(i, end)):
            end = None
        head_end = end if end is not None else i
        if end is None:
            if not (_NUMBERED_ENTRY.match(line) or re.match(r"^ {0,3}Q\s*\d*\s*[:.)]", line)):
                continue
            while (head_end + 1 < n and not is_blank(lines[head_end + 1])
                   and indent_of(lines[head_end + 1]) <= indent_of(line)):
                head_end += 1
        k = head_end + 1
        while k < n and is_blank(lines[k]):
            k += 1
        if k >= n:
            continue
        answer = lines[k]
        more_indented = indent_of(answer) > indent_of(line)
        if _ANSWER.match(answer) or more_indented:
            found.append(i)
        elif end is not None and not answer.rstrip().endswith("?") and not _TOC_LINE.match(answer):
            found.append(i)
    return found


def faq_heads(text: str, lines: list[str]) -> list[int]:
    return sorted(set(faq_question_lines(lines)) | set(text_heads(text, lines)))
