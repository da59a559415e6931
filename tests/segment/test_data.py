"""SemanticSeg-style data: categories, structural cuts, concat joins, bounds, determinism, JSONL, splits."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from blockrag.segment.train.data import (
    BuildOptions,
    Instance,
    SegmentDataError,
    at_line_start,
    build_instances,
    read_jsonl,
    split_by_source,
    write_jsonl,
)
from blockrag.segment.train.sources import (
    HELD_OUT_SOURCES,
    TRAIN_SOURCES,
    CorpusSource,
    default_sources,
    read_document,
)

MIN_TOKENS, MAX_TOKENS = 40, 400   # 160 to 1600 characters
SEED = 7


def sentences(topic: str, n: int) -> str:
    return " ".join(f"The {topic} note {i} says how the tool behaves when {topic} is set." for i in range(n))


MARKDOWN = f"""# Guide

{sentences("intro", 3)}

## Install

{sentences("install", 4)}

```sh
# not a heading: inside a fence
make install
```

## Usage

{sentences("usage", 4)}

### Options

{sentences("options", 3)}
"""

PYTHON = f'''"""Tools for the tests.

{sentences("module", 2)}
"""

import functools


def first(x):
    """{sentences("first", 2)}"""
    return x + 1


# the second one is cached; this comment stays with it
@functools.cache
def second(y):
    """{sentences("second", 2)}"""
    return y * 2


def third(z):
    """{sentences("third", 2)}"""
    return z - 3
'''

C_CODE = f"""/* {sentences("header", 2)} */
#include <stdio.h>

/* Adds one. {sentences("add", 1)} */
static int add_one(int x)
{{
    return x + 1;   /* a brace in a comment: {{ */
}}

int twice(int y)
{{
    const char *s = "{{ not a block";
    return y * 2;
}}

int main(void)
{{
    printf("%d\\n", twice(add_one(1)));
    return 0;
}}
"""

HTML = f"""<html><head><title>Page</title><script>var x = "<h2>no</h2>";</script></head>
<body><nav><ul><li>Home</li><li>About</li></ul></nav>
<h1>Manual</h1><p>{sentences("manual", 3)}</p>
<h2>Setup</h2><p>{sentences("setup", 4)}</p><ul><li>first item</li><li>second item</li></ul>
<h2>Running</h2><p>{sentences("running", 4)}</p><pre>run --fast
run --slow</pre>
</body></html>
"""

CHAT = "\n".join([
    "Alice: Hi Bob, did you see that the nightly build failed again?",
    "Bob: Yes, the linker ran out of memory on the big target.",
    "Alice: Should we raise the memory limit of the builder then?",
    "Bob: Let us try that first and look at the numbers tomorrow.",
    "",
    "Carol: Morning all, does anyone know where the design document lives?",
    "Dave: It is in the shared folder, under specs and then storage.",
    "Carol: Thanks, and who reviews the storage part of it this week?",
    "Dave: I do, send me your comments before Friday please.",
    "",
    "Alice: Quick one, is the release still planned for next Monday?",
    "Carol: As far as I know it is, unless the build stays red.",
    "Alice: Then I will keep an eye on the build all weekend.",
    "Carol: Good, ping me if anything breaks again on the main branch.",
]) + "\n"

FAQ = "\n".join([
    "Frequently asked questions", "", "",
    "Q: How do I install the tool?", "", "A: " + sentences("install", 2), "", "",
    "Q: Where do the logs go?", "", "A: " + sentences("logs", 2), "", "",
    "Q: Can I run it without a network?", "", "A: " + sentences("network", 2), "",
]) + "\n"

NOTES = "\n\n".join(sentences(f"notes{i}", 3) for i in range(5)) + "\n"
LICENSE_GZ = "\n\n".join(sentences(f"licence{i}", 3) for i in range(4)) + "\n"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("corpus")
    (root / "docs").mkdir()
    (root / "code").mkdir()
    (root / "talk").mkdir()
    (root / "docs" / "guide.md").write_text(MARKDOWN)
    (root / "docs" / "page.html").write_text(HTML)
    (root / "code" / "tool.py").write_text(PYTHON)
    (root / "code" / "calc.c").write_text(C_CODE)
    (root / "talk" / "chat.txt").write_text(CHAT)
    (root / "talk" / "FAQ").write_text(FAQ)
    (root / "notes.txt").write_text(NOTES)
    (root / "LICENSE.gz").write_bytes(gzip.compress(LICENSE_GZ.encode()))
    (root / "image.txt").write_bytes(b"\x89PNG\0\0binary" * 40)       # binary: skipped
    (root / "data.bin").write_bytes(b"not a known extension" * 20)      # unknown format: skipped
    return root


def build(corpus: Path, seed: int = SEED, **kwargs) -> list[Instance]:
    return build_instances([corpus], seed=seed, min_tokens=MIN_TOKENS, max_tokens=MAX_TOKENS, **kwargs)


@pytest.fixture(scope="module")
def instances(corpus) -> list[Instance]:
    return build(corpus)


def doc_text(path: Path) -> str:
    doc = read_document(path)
    assert doc is not None
    return doc.text


def check_structure(instances: list[Instance], source: Path, expected: list[int]) -> int:
    """Every structure instance of `source` is a window of its text whose boundaries are exactly
    the expected starts strictly inside the window. Returns how many instances were checked."""
    text = doc_text(source)
    checked = 0
    for instance in instances:
        if instance.kind != "structure" or instance.source != str(source):
            continue
        offset = text.index(instance.text)
        inside = [s - offset for s in expected if offset < s < offset + len(instance.text)]
        assert instance.boundaries == inside
        checked += 1
    return checked


def line_starts_of(text: str, prefixes: tuple[str, ...]) -> list[int]:
    starts, pos = [], 0
    for line in text.split("\n"):
        if line.startswith(prefixes):
            starts.append(pos)
        pos += len(line) + 1
    return starts


def test_categories_and_formats_detected(corpus):
    expected = {
        "docs/guide.md": ("docs", "markdown"), "docs/page.html": ("docs", "html"),
        "code/tool.py": ("code", "python"), "code/calc.c": ("code", "c"),
        "talk/chat.txt": ("dialogue", "chat"), "talk/FAQ": ("dialogue", "faq"),
        "notes.txt": ("prose", "text"), "LICENSE.gz": ("prose", "text"),
    }
    for name, (category, fmt) in expected.items():
        doc = read_document(corpus / name)
        assert doc is not None, name
        assert (doc.category, doc.fmt) == (category, fmt), name
    assert read_document(corpus / "image.txt") is None
    assert read_document(corpus / "data.bin") is None
    assert read_document(corpus / "LICENSE.gz").text == LICENSE_GZ.strip()


def test_html_text_keeps_structure_and_drops_scripts_and_navigation(corpus):
    doc = read_document(corpus / "docs" / "page.html")
    assert "var x" not in doc.text and "About" not in doc.text
    assert "- first item\n- second item" in doc.text
    assert "run --fast\nrun --slow" in doc.text
    assert [doc.text[s:].split("\n")[0] for s in doc.starts] == ["Manual", "Setup", "Running"]


def test_markdown_boundaries_exactly_at_section_starts(corpus, instances):
    source = corpus / "docs" / "guide.md"
    text = doc_text(source)
    # "# Guide" opens the first segment; the fenced "# not a heading" is no start
    expected = line_starts_of(text, ("## ", "### "))
    assert len(expected) == 3
    assert check_structure(instances, source, expected) >= 1


def test_python_boundaries_at_functions_with_their_comments_and_decorators(corpus, instances):
    source = corpus / "code" / "tool.py"
    text = doc_text(source)
    expected = [text.index("def first"), text.index("# the second one"), text.index("def third")]
    assert check_structure(instances, source, expected) >= 1


def test_c_boundaries_at_functions_with_their_comments(corpus, instances):
    source = corpus / "code" / "calc.c"
    text = doc_text(source)
    expected = [text.index("/* Adds one."), text.index("int twice"), text.index("int main")]
    assert list(read_document(source).starts[1:]) == expected
    assert check_structure(instances, source, expected) >= 1


def test_html_boundaries_at_headings(corpus, instances):
    source = corpus / "docs" / "page.html"
    text = doc_text(source)
    expected = [text.index("Setup\n"), text.index("Running\n")]
    assert check_structure(instances, source, expected) >= 1


def test_dialogue_cut_at_conversation_separators_and_faq_questions(corpus, instances):
    chat = corpus / "talk" / "chat.txt"
    text = doc_text(chat)
    assert check_structure(instances, chat, [text.index("Carol: Morning"), text.index("Alice: Quick")]) >= 1
    faq = corpus / "talk" / "FAQ"
    text = doc_text(faq)
    assert check_structure(instances, faq, line_starts_of(text, ("Q: ",))[1:]) >= 1


def test_every_boundary_is_a_line_start(instances):
    assert {i.kind for i in instances} == {"structure", "concat"}
    for instance in instances:
        instance.validate()
        for b in instance.boundaries:
            assert not instance.text[b].isspace()
            j = b
            while instance.text[j - 1] != "\n" and instance.text[j - 1].isspace():
                j -= 1
            assert instance.text[j - 1] == "\n"


def test_instances_within_token_bounds(instances):
    for instance in instances:
        assert MIN_TOKENS * 4 <= len(instance.text) <= MAX_TOKENS * 4
        assert instance.boundaries


def test_concat_boundaries_at_joins_of_different_documents(corpus, instances):
    texts = {str(p): doc_text(p) for p in corpus.rglob("*") if p.is_file() and read_document(p)}
    concat = [i for i in instances if i.kind == "concat"]
    assert {i.category for i in concat} >= {"prose", "docs", "code", "dialogue"}
    for instance in concat:
        assert len(instance.sources) == len(instance.boundaries) + 1
        for b in instance.boundaries:
            assert instance.text[:b].rstrip(" \t").endswith("\n\n")
        for segment, source in zip(instance.segments, instance.sources):
            assert segment in texts[source]
        assert all(a != b for a, b in zip(instance.sources, instance.sources[1:]))


def test_deterministic_for_a_seed(corpus, instances):
    assert build(corpus) == instances
    assert build(corpus, seed=SEED + 1) != instances


def test_max_instances_is_balanced_over_category_and_kind(corpus, instances):
    buckets = {(i.category, i.kind) for i in instances}
    assert len(buckets) >= 7   # prose has no structure here
    picked = build(corpus, max_instances=len(buckets))
    assert {(i.category, i.kind) for i in picked} == buckets
    assert len(build(corpus, max_instances=3)) == 3


def test_progress_reports_every_file(corpus):
    calls = []
    build(corpus, progress=lambda done, total: calls.append((done, total)))
    total = calls[-1][1]
    assert calls == [(k, total) for k in range(1, total + 1)]


def test_jsonl_round_trip(tmp_path, instances):
    path = tmp_path / "data" / "train.jsonl"
    assert write_jsonl(path, instances) == len(instances)
    assert read_jsonl(path) == instances


def test_jsonl_rejects_a_boundary_inside_a_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    bad = {"text": "one line\nsecond line", "boundaries": [3], "category": "prose", "kind": "concat",
           "source": "x"}
    path.write_text(json.dumps(bad) + "\n")
    with pytest.raises(SegmentDataError, match="bad.jsonl:1"):
        read_jsonl(path)
    assert at_line_start("one line\nsecond line", 9)


def test_held_out_split_shares_no_source(corpus, instances):
    kept, held = split_by_source(instances, lambda source: "/talk/" in source or source.endswith(".c"))
    assert kept and held
    kept_sources = {s for i in kept for s in i.sources}
    held_sources = {s for i in held for s in i.sources}
    assert not kept_sources & held_sources
    assert all("/talk/" in s or s.endswith(".c") for s in held_sources)


def test_forced_category_and_excludes(corpus):
    source = CorpusSource(corpus, category="prose", exclude=("code/*", "talk/*", "*.html"))
    built = build_instances([source], seed=1, min_tokens=MIN_TOKENS, max_tokens=MAX_TOKENS)
    assert built and {i.category for i in built} == {"prose"}
    assert not any(".py" in s or ".html" in s or "/talk/" in s for i in built for s in i.sources)


def test_bad_bounds_are_rejected(corpus):
    with pytest.raises(SegmentDataError):
        build_instances([corpus], seed=0, min_tokens=100, max_tokens=10)
    with pytest.raises(SegmentDataError):
        BuildOptions(chars_per_token=0)


def test_default_sources_are_disjoint_and_exist():
    for split in ("train", "held_out"):
        for source in default_sources(split):
            assert source.path.exists()
    train = [s.path for s in TRAIN_SOURCES]
    held = [s.path for s in HELD_OUT_SOURCES]
    for a in train:
        for b in held:
            assert a != b
            for inner, outer in ((a, b), (b, a)):
                if inner.is_relative_to(outer):   # only through a folder the walk skips
                    assert "site-packages" in inner.relative_to(outer).parts
    with pytest.raises(ValueError):
        default_sources("test")
