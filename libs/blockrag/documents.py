"""Reading the documents a user points the CLI at."""

from __future__ import annotations

from pathlib import Path

from blockrag.errors import InvalidRequestError

TEXT_SUFFIXES = (".md", ".txt", ".rst")


def read_documents(paths: list[Path]) -> dict[str, str]:
    """path -> text for every file given, and every .md/.txt/.rst file under each directory given."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in TEXT_SUFFIXES))
        elif path.is_file():
            files.append(path)
        else:
            raise InvalidRequestError(f"no such file or directory: {path}")
    if not files:
        raise InvalidRequestError(f"no {'/'.join(TEXT_SUFFIXES)} documents under {', '.join(map(str, paths))}")
    documents = {}
    for file in files:
        try:
            documents[str(file)] = file.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise InvalidRequestError(f"{file} is not UTF-8 text: {e}") from e
    return documents
