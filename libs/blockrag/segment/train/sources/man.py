"""Manual pages: rendered to plain text by groff; their section headings start at column 0."""

from __future__ import annotations

import re
import shutil
import subprocess


_MAN_HEADER = re.compile(r"^\S+\([^)]*\).*\S+\([^)]*\)\s*$")


def render_man(raw: bytes) -> str | None:
    """A man page rendered as plain text by groff (no adjustment, no hyphenation, one long page);
    None without groff, for `.so` links and for pages groff cannot render."""
    groff = shutil.which("groff")
    if groff is None or raw.lstrip().startswith(b".so "):
        return None
    cmd = [groff, "-k", "-t", "-mandoc", "-Tutf8", "-rcR=1", "-rLL=78n", "-rHY=0", "-P-c", "-P-b", "-P-u"]
    try:
        done = subprocess.run(cmd, input=b".na\n" + raw, capture_output=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):   # a page groff chokes on is not corpus text
        return None
    if done.returncode != 0:
        return None
    lines = done.stdout.decode("utf-8", "replace").split("\n")
    body = [i for i, line in enumerate(lines) if line.strip()]
    if len(body) < 3:
        return None
    first, last = body[0], body[-1]
    if _MAN_HEADER.match(lines[first]):
        lines[first] = ""
    if _MAN_HEADER.match(lines[last]) or re.search(r"\S+\(\d\w*\)\s*$", lines[last]):
        lines[last] = ""
    return "\n".join(lines)


def man_heads(text: str, lines: list[str]) -> list[int]:
    return [i for i, line in enumerate(lines) if line and not line[0].isspace()]
