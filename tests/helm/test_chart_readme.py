"""helm/blockrag/README.md's values reference names every key of values.yaml down to the second
level (a new value without a line in the README fails here)."""

from __future__ import annotations

import re

import yaml
from chart_render import CHART


def rows() -> list[str]:
    readme = (CHART / "README.md").read_text()
    section = readme[readme.index("## Values"):]
    section = section[:section.index("\n## ", 1)]
    return [line for line in section.splitlines() if line.startswith("| `")]


def documented(path: str, table: list[str]) -> bool:
    """`a.b` in a row, or a row naming `a...` with `.b` / `b` in backticks (`a.b`, `.c`)."""
    parent, _, child = path.rpartition(".")
    for row in table:
        if f"`{path}" in row:
            return True
        if parent and f"`{parent}" in row and re.search(rf"`\.?{re.escape(child)}[`/,.]", row):
            return True
    return False


def keys(values: dict, prefix: str = "", depth: int = 2):
    for key, value in values.items():
        yield prefix + key
        if depth > 1 and isinstance(value, dict):
            yield from keys(value, f"{prefix}{key}.", depth - 1)


def test_every_value_has_a_line_in_the_readme():
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    table = rows()
    missing = [k for k in keys(values) if not documented(k, table)]
    assert not missing, f"README.md's Values table does not name: {missing}"
    assert not documented("noSuchKey.atAll", table)  # the check can fail
