from blockrag.segment import split_paragraphs


def test_paragraphs_keep_their_heading():
    text = "# Title\n\nFirst para\nstill first.\n\n\n  \nSecond.\n\n## Sub\n\nThird.\n\n## Dangling"
    assert split_paragraphs(text) == ["# Title\nFirst para\nstill first.", "Second.", "## Sub\nThird.", "## Dangling"]


def test_empty_text_has_no_paragraphs():
    assert split_paragraphs("\n\n  \n") == []
