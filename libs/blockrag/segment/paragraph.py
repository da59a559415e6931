"""Paragraph splitting: the baseline segmenter until the trained one arrives."""

from __future__ import annotations

import re

_BLANK_LINES = re.compile(r"\n\s*\n")


def split_paragraphs(text: str) -> list[str]:
    """Paragraphs separated by blank lines, stripped, empty ones dropped. A Markdown heading
    stays with the paragraph under it, so a block carries its own title."""
    paragraphs: list[str] = []
    pending_heading = ""
    for chunk in _BLANK_LINES.split(text):
        chunk = chunk.strip()
        if not chunk:
            continue
        if chunk.startswith("#") and "\n" not in chunk:
            pending_heading = f"{pending_heading}{chunk}\n"
            continue
        paragraphs.append(pending_heading + chunk)
        pending_heading = ""
    if pending_heading:
        paragraphs.append(pending_heading.strip())
    return paragraphs
