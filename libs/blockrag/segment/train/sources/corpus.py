"""Corpus sources for SemanticSeg-style data: files become Documents (text, category, own structure).

Default offline corpora of the shipped segmenter (every one openly licensed and present on a Debian
machine with the project's toolchain); the two splits share no file and no source tree:

train (TRAIN_SOURCES)
  /usr/share/doc                  Debian package documentation: README, NEWS, FAQ, TODO, HTML, Markdown,
                                  text, examples (C, shell, awk...); changelogs, copyright files and test
                                  logs excluded. Licence per package, /usr/share/doc/<pkg>/copyright
                                  (Debian main: DFSG-free).
  (/usr/share/common-licenses was a train source until issue 10: licence texts, man pages and the
  Debian FAQ are where the hidden prose acceptance set comes from, so they never train a model;
  `blockrag segment build-data --split train` also drops documents train/prose.py `forbidden`s.)
  CPython 3.11 standard library   code (PSF-2.0); nested site-packages skipped.
  /usr/include/{linux,X11,...}    C headers: Linux UAPI (GPL-2.0 WITH Linux-syscall-note), X11 (MIT),
                                  OpenSSL (Apache-2.0), Tcl (TCL), CPython (PSF-2.0), FreeType (FTL).
held out (HELD_OUT_SOURCES)
  .venv site-packages             third-party Python code, READMEs, Markdown, METADATA long descriptions;
                                  licence per distribution (*.dist-info/METADATA, mostly MIT/BSD/Apache).
  Rust toolchain books (HTML)     The Rust Book, Reference, Rust by Example, Nomicon, Cargo, rustc,
                                  rustdoc, edition and embedded books (MIT OR Apache-2.0).
  /usr/share/man/man[1-8]         English man pages rendered with groff (licence per package; the 16k
                                  generated gcloud pages excluded). Skipped where groff is missing.
  /usr/share/perl/5.36            Perl core modules and POD, incl. two FAQs (Artistic-1.0-Perl OR
                                  GPL-1.0-or-later).
  /usr/share/nodejs               JavaScript (jQuery, Popper, Bootstrap: MIT).

Dialogue: nothing on the machine is a real conversation (no chat or IRC logs, no transcripts); the
only exchange-shaped text is FAQs (question, then answer), used as the "dialogue" category.
"""

from __future__ import annotations

import fnmatch
import os
import re
import sys
import sysconfig
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


CATEGORIES = ("prose", "docs", "code", "dialogue")


@dataclass(frozen=True)
class CorpusSource:
    """A directory (or file) of a corpus. category forces every file's category (None: detected);
    exclude: fnmatch patterns on the path relative to `path` or on the file name. A CorpusSource is
    os.PathLike, so it goes wherever a Path does."""

    path: Path
    category: str | None = None
    license: str = "unknown"
    exclude: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))
        if self.category is not None and self.category not in CATEGORIES:
            raise ValueError(f"category must be one of {CATEGORIES}, got {self.category!r}")

    def __fspath__(self) -> str:
        return str(self.path)


_PYTHON_LIB = Path(sys.base_prefix) / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}"
_SITE_PACKAGES = Path(sysconfig.get_paths()["purelib"])   # the running environment's (the project .venv)
_RUST_DOC = Path.home() / ".rustup/toolchains/stable-x86_64-unknown-linux-gnu/share/doc/rust/html"
_DEBIAN_PKG = "per package: /usr/share/doc/<package>/copyright (Debian main, DFSG-free)"

TRAIN_SOURCES: tuple[CorpusSource, ...] = (
    CorpusSource(Path("/usr/share/doc"), None, _DEBIAN_PKG, exclude=(
        "*changelog*", "*ChangeLog*", "*CHANGES*", "*HISTORY*", "*/RelNotes/*", "*/changelogs/*",
        "copyright", "*.log", "*.log.gz", "*/test-amd64/*", "*test-summary*", "*.json*", "*.ps.gz",
        "*/api/all.html", "ACKS*", "THANKS*", "AUTHORS*", "CREDITS*")),
    CorpusSource(_PYTHON_LIB, None, "PSF-2.0 (CPython standard library)",
                 exclude=("config-*", "lib-dynload/*", "test/*data*", "*/test/*data*", "test/*.txt",
                          "*/cjkencodings/*", "idlelib/Icons/*")),
    CorpusSource(Path("/usr/include/linux"), None, "GPL-2.0 WITH Linux-syscall-note"),
    CorpusSource(Path("/usr/include/X11"), None, "MIT/X11"),
    CorpusSource(Path("/usr/include/openssl"), None, "Apache-2.0"),
    CorpusSource(Path("/usr/include/tcl8.6"), None, "TCL (BSD-style)"),
    CorpusSource(Path(f"/usr/include/python{sys.version_info.major}.{sys.version_info.minor}"), None,
                 "PSF-2.0"),
    CorpusSource(Path("/usr/include/freetype2"), None, "FTL OR GPL-2.0-or-later"),
)

_RUST_BOOKS = ("book", "reference", "rust-by-example", "nomicon", "edition-guide", "embedded-book",
               "cargo", "rustc", "rustdoc", "style-guide")
HELD_OUT_SOURCES: tuple[CorpusSource, ...] = (
    CorpusSource(_SITE_PACKAGES, None, "per distribution: *.dist-info/METADATA (mostly MIT/BSD/Apache-2.0)",
                 exclude=("RECORD", "WHEEL", "INSTALLER", "REQUESTED", "entry_points.txt", "top_level.txt",
                          "*.dist-info/licenses/*", "*/_vendor/*", "*/vendored/*")),
    *(CorpusSource(_RUST_DOC / book, None, "MIT OR Apache-2.0",
                   exclude=("print.html", "toc.html", "404.html", "*/2018-edition/*", "*/first-edition/*",
                            "*/second-edition/*"))
      for book in _RUST_BOOKS),
    *(CorpusSource(Path(f"/usr/share/man/man{n}"), "docs", "per package (see /usr/share/doc/<pkg>/copyright)",
                   exclude=("gcloud*",))
      for n in range(1, 9)),
    CorpusSource(Path("/usr/share/perl/5.36"), None, "Artistic-1.0-Perl OR GPL-1.0-or-later"),
    CorpusSource(Path("/usr/share/nodejs"), None, "MIT (jQuery, Popper, Bootstrap)",
                 exclude=("*.min.js", "*/test-utils/*")),
)


def default_sources(split: str) -> list[CorpusSource]:
    """The default sources of a split ("train" or "held_out") that exist on this machine."""
    table = {"train": TRAIN_SOURCES, "held_out": HELD_OUT_SOURCES}
    if split not in table:
        raise ValueError(f"split must be 'train' or 'held_out', got {split!r}")
    return [source for source in table[split] if source.path.exists()]


_SKIP_DIRS = {"site-packages", "dist-packages", "node_modules", "__pycache__", ".git", ".hg", ".svn",
              ".venv", "venv", ".tox", ".mypy_cache", ".pytest_cache"}

# extension -> code dialect for the structure scanner ("plain": no structure known)
CODE_EXTS = {
    ".py": "python", ".pyi": "python",
    ".c": "c", ".h": "c", ".cc": "c", ".cpp": "c", ".cxx": "c", ".hpp": "c", ".hh": "c", ".hxx": "c",
    ".cs": "c", ".java": "c", ".kt": "c", ".scala": "c", ".swift": "c", ".php": "c", ".rs": "c",
    ".go": "go", ".js": "js", ".mjs": "js", ".cjs": "js", ".jsx": "js", ".ts": "js", ".tsx": "js",
    ".sh": "sh", ".bash": "sh", ".zsh": "sh", ".awk": "sh", ".tcl": "sh",
    ".pl": "perl", ".pm": "perl",
    ".rb": "plain", ".lua": "plain", ".el": "plain", ".lisp": "plain", ".scm": "plain", ".hs": "plain",
    ".ml": "plain", ".sql": "plain", ".r": "plain", ".erl": "plain", ".ex": "plain", ".vim": "plain",
}
_TEXT_EXTS = {"": "text", ".txt": "text", ".text": "text", ".md": "markdown", ".markdown": "markdown",
              ".mdown": "markdown", ".mkd": "markdown", ".rst": "rst", ".rest": "rst", ".html": "html",
              ".htm": "html", ".xhtml": "html", ".pod": "pod", ".adoc": "asciidoc",
              ".asciidoc": "asciidoc"}
_DOC_NAMES = {"README", "NEWS", "FAQ", "TODO", "INSTALL", "HACKING", "CONTRIBUTING", "USAGE", "BUGS",
              "NOTES", "COPYING", "LICENSE", "LICENCE", "NOTICE", "DESIGN", "PORTING", "SECURITY"}
_MAN_NAME = re.compile(r"\.[1-9][a-z0-9]*$")
_MAN_DIR = re.compile(r"^man[1-9][a-z0-9]*$")
MARKUP = {"markdown", "rst", "html", "pod", "asciidoc", "man", "metadata"}


def iter_files(source: CorpusSource | Path) -> Iterator[Path]:
    """The files of a source in sorted order: nested third-party trees (site-packages,
    node_modules, VCS and cache folders) and symlinked folders skipped, excludes applied."""
    source = source if isinstance(source, CorpusSource) else CorpusSource(Path(source))
    root = source.path
    if root.is_file():
        yield root
        return
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames
                             if d not in _SKIP_DIRS and not os.path.islink(os.path.join(dirpath, d)))
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            path = Path(dirpath) / name
            rel = path.relative_to(root).as_posix()
            if any(fnmatch.fnmatch(rel, pat) or fnmatch.fnmatch(name, pat) for pat in source.exclude):
                continue
            if format_of(path) is not None:
                yield path


def format_of(path: Path) -> str | None:
    """The reading format of a file from its name, None when it is not text we read."""
    name = path.name[:-3] if path.name.endswith(".gz") else path.name
    suffix = Path(name).suffix.lower() if "." in name.lstrip(".") else ""
    if name in ("METADATA", "PKG-INFO"):
        return "metadata"
    if _MAN_NAME.search(name) and _MAN_DIR.match(path.parent.name):
        return "man"
    if suffix in CODE_EXTS:
        return "code"
    if suffix in _TEXT_EXTS:
        return _TEXT_EXTS[suffix]
    if name.split(".")[0].upper() in _DOC_NAMES:
        return "text"
    return None
