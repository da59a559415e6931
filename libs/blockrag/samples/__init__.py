"""Sample documents bundled with the package, for the demo and tests."""

from __future__ import annotations

from importlib import resources


def sample_documents() -> dict[str, str]:
    """name -> text of every bundled sample document, in name order."""
    root = resources.files(__package__)
    return {p.name: p.read_text(encoding="utf-8") for p in sorted(root.iterdir(), key=lambda p: p.name)
            if p.name.endswith(".md")}


def sample_paths() -> list[str]:
    """Filesystem paths of the bundled sample documents."""
    root = resources.files(__package__)
    return [str(root / name) for name in sample_documents()]
