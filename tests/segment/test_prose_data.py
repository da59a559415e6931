"""Prose training data (issue 10): headings dropped, Choi-style joins from distinct documents,
and never a document of the hidden acceptance sources (Debian FAQ, licence texts, man pages)."""

from __future__ import annotations

from pathlib import Path

import pytest

from blockrag.segment.train.sources import TRAIN_SOURCES
from blockrag.segment.train.prose import (
    ProseDoc,
    choi_instances,
    debian_docs,
    forbidden,
    is_heading,
    split_sections,
    stripped_instances,
)


@pytest.mark.parametrize("path", [
    "/usr/share/common-licenses/GPL-3", "/usr/share/man/man1/ls.1.gz", "/usr/share/doc/debian/FAQ/index.html",
    "/usr/share/doc/debian-faq/debian-faq.en.txt.gz", "/usr/share/doc/git/git-log.1.html",
    "/usr/share/doc/foo/foo.8.txt", "/usr/share/doc/bar/copyright", "man:man5/ldap.conf.5", "faq:kernel"[:0] + "debian-faq"])
def test_forbidden_sources(path):
    assert forbidden(path)


@pytest.mark.parametrize("path", ["/usr/share/doc/socat/README", "pydoc_data.topics:assert", "stdlib:json/__init__.py",
                                  "/usr/share/doc/python3/python-policy.txt.gz", "/usr/include/tcl8.6", "/usr/share/doc/python3.11/README"])
def test_allowed_sources(path):
    assert not forbidden(path)


def test_train_sources_hold_nothing_forbidden():
    assert not [s.path for s in TRAIN_SOURCES if forbidden(str(s.path))]


def test_headings_are_dropped_and_cut_sections():
    text = "Title\n=====\n\nFirst para of one.\n\nSecond para of one.\n\n## Next\n\nOnly para of two.\n"
    assert split_sections(text) == (("First para of one.", "Second para of one."), ("Only para of two.",))
    assert is_heading("# Usage") and is_heading("Options") and not is_heading("A sentence that ends.")


def words(n: int, tag: str) -> str:
    return " ".join(f"{tag}{i}" for i in range(n)) + "."


DOCS = [ProseDoc(f"/usr/share/doc/pkg{d}/README", "test", tuple(
    tuple(words(40, f"d{d}s{s}p{p}") for p in range(3)) for s in range(2))) for d in range(12)]


def test_choi_instances_join_distinct_documents_with_one_blank_line():
    instances = choi_instances(DOCS, 20, seed=0)
    assert len(instances) == 20
    for instance in instances:
        instance.validate()
        assert instance.kind == "concat" and instance.category == "prose"
        assert 4 <= len(instance.boundaries) + 1 <= 10
        assert len(set(instance.sources)) == len(instance.sources)  # each segment its own document
        assert "\n\n\n" not in instance.text
        for b in instance.boundaries:  # a join looks like any paragraph break
            assert instance.text[b - 2:b] == "\n\n"
        for segment in instance.segments:
            tags = {w.split("p")[0] for w in segment.replace(".", "").split()}
            assert len(tags) == 1  # one section of one document


def test_stripped_instances_cut_where_the_headings_were():
    [doc] = DOCS[:1]
    [instance] = stripped_instances([doc], seed=0, words=(10_000, 10_001))
    instance.validate()
    assert instance.segments == ["\n\n".join(s) for s in doc.sections]


def test_builders_refuse_a_forbidden_document():
    bad = ProseDoc("/usr/share/common-licenses/GPL-3", "GPL", DOCS[0].sections)
    with pytest.raises(ValueError):
        choi_instances([bad, *DOCS], 1, seed=0)
    with pytest.raises(ValueError):
        stripped_instances([bad], seed=0)


def test_debian_docs_skip_forbidden_files(tmp_path: Path):
    body = "\n\n".join(words(30, f"p{i}") for i in range(5))
    for name in ("pkg/README", "pkg/tool.1.txt", "pkg/html/tool.8.html", "debian-faq/README", "pkg/copyright"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(body)
    sources = [d.source for d in debian_docs(tmp_path)]
    assert sources == [str(tmp_path / "pkg/README")]
