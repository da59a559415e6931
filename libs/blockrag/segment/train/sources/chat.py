"""Chat logs: lines that read as speaker turns, whether a text is a conversation, and where one
conversation of a log ends."""

from __future__ import annotations

import collections
import re

from blockrag.segment.train.sources.lines import is_blank


_FIELD_KEYS = {
    "author", "authors", "date", "commit", "merge", "files", "file", "license", "licence", "copyright",
    "comment", "source", "format", "name", "version", "summary", "classifier", "subject", "from", "to",
    "cc", "bcc", "type", "option", "options", "phase", "platforms", "platform", "note", "notes", "status",
    "description", "usage", "example", "examples", "returns", "return", "parameters", "params", "args",
    "arguments", "raises", "see", "warning", "todo", "fixme", "xxx", "bug", "bugs", "fix", "fixes",
    "homepage", "maintainer", "section", "priority", "depends", "package", "architecture", "url",
    "email", "e-mail", "phone", "web", "released", "requires", "provides", "keywords", "title", "yields",
    "default", "defaults", "origin", "upstream", "reason", "passed", "failed", "error", "errors", "test",
    "result", "results", "output", "input", "value", "values", "key", "id", "path", "host",
    "time", "size", "total", "mode", "level", "class", "module", "function", "method", "step", "tip",
    "important", "caution", "attention", "hint", "danger", "deprecated", "added", "changed", "removed",
}
_TURN = re.compile(
    r"^[ \t]{0,4}(?:[\[(]?\d{1,2}:\d{2}(?::\d{2})?(?:[ ]?[AaPp][Mm])?[\])]?[ \t]+)?"
    r"(?:<[ @+]?(?P<nick>[^\s<>]{1,24})>"
    r"|\*{0,2}(?P<name>[A-Z][\w.'\-]*(?: [A-Z][\w.'\-]*){0,2})\*{0,2}:\*{0,2})"
    r"[ \t]+(?P<said>\S.*)$")


def _turns(lines: list[str]) -> list[tuple[int, str, str]]:
    """(line index, speaker, what was said) of the lines that read as dialogue turns."""
    found = []
    for i, line in enumerate(lines):
        m = _TURN.match(line)
        if m:
            speaker = m.group("nick") or m.group("name")
            if speaker.lower() not in _FIELD_KEYS:
                found.append((i, speaker, m.group("said")))
    return found


def is_chat(lines: list[str]) -> bool:
    nonblank = sum(1 for line in lines if line.strip())
    turns = _turns(lines)
    if nonblank < 8 or len(turns) < 6 or len(turns) < 0.3 * nonblank:
        return False
    speakers = collections.Counter(speaker for _, speaker, _ in turns)
    common = speakers.most_common(2)
    if not 2 <= len(speakers) <= 40 or common[1][1] < 2:
        return False
    changes = sum(1 for a, b in zip(turns, turns[1:]) if a[1] != b[1])
    words = sorted(len(said.split()) for _, _, said in turns)
    return changes >= 0.5 * (len(turns) - 1) and words[len(words) // 2] >= 3


_SEPARATOR = re.compile(r"^\s*(?:[-*=_~]{3,}.*|#{1,6}\s.*|\[?\d{4}-\d{2}-\d{2}\b.*"
                        r"|.*\b(?:Session (?:Start|Close)|Day changed)\b.*)$")


def chat_heads(text: str, lines: list[str]) -> list[int]:
    turns = _turns(lines)
    if not turns:
        return []
    speakers = {speaker.lower() for _, speaker, _ in turns}
    if speakers <= {"q", "a", "question", "answer"}:
        return [i for i, speaker, _ in turns if speaker.lower() in ("q", "question")]
    heads = []
    for i, line in enumerate(lines):
        if _SEPARATOR.match(line):
            j = i + 1 if re.match(r"^\s*[-*=_~]{3,}\s*$", line) else i
            while j < len(lines) and is_blank(lines[j]):
                j += 1
            if j < len(lines):
                heads.append(j)
    followed_by_blank = sum(1 for i, _, _ in turns if i + 1 < len(lines) and is_blank(lines[i + 1]))
    if followed_by_blank <= 0.5 * len(turns):   # turns are contiguous: a blank line ends a conversation
        turn_lines = {i for i, _, _ in turns}
        heads.extend(i for i in turn_lines if i > 0 and is_blank(lines[i - 1]))
    return sorted(set(heads))
