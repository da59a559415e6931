"""HTML pages: text one paragraph a block, with the offsets of their headings and FAQ questions."""

from __future__ import annotations

import re
from html.parser import HTMLParser

from blockrag.segment.train.sources.lines import normalize


_SKIP_TAGS = {"script", "style", "head", "nav", "header", "footer", "aside", "noscript", "template", "svg",
              "button", "form", "select", "iframe", "object", "canvas", "math"}
_SKIP_TOKENS = {"sidebar", "menu", "navbar", "nav", "navigation", "breadcrumb", "breadcrumbs", "search",
                "searchbar", "popup", "boring", "hidden", "toolbar", "cookie", "banner", "skip"}
_VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param", "source",
         "track", "wbr"}
_BLOCK = {"p", "div", "section", "article", "main", "blockquote", "ul", "ol", "dl", "table", "tr", "pre",
          "figure", "figcaption", "hr", "li", "dt", "dd", "h1", "h2", "h3", "h4", "h5", "h6", "body",
          "center", "address", "details", "summary", "caption", "thead", "tbody", "tfoot", "html"}
_TIGHT = {"li", "tr", "dt"}   # consecutive list items and table rows are one line apart, not a blank line
_SPACES = re.compile(r"[ \t\n\r\f\v]+")


_KIND_TAGS = {"li", "dt", "dd", "tr", "pre", "h1", "h2", "h3", "h4", "h5", "h6"}


class _HTMLText(HTMLParser):
    """Blocks of text of an HTML page: (kind, text), kind the tag that opened the block or "p"."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.blocks: list[tuple[str, str]] = []
        self.buffer: list[str] = []
        self.kind = "p"
        self.skip: list[str] = []   # open tags inside a skipped element
        self.pre = 0

    def flush(self) -> bool:
        if self.pre:
            text = "".join(self.buffer)
        else:   # "\0" marks a <br>
            text = "\n".join(_SPACES.sub(" ", part).strip() for part in "".join(self.buffer).split("\0"))
            text = "\n".join(line for line in text.split("\n") if line)
        self.buffer = []
        text = normalize(text)
        if not text.strip():
            return False
        self.blocks.append((self.kind, f"- {text}" if self.kind == "li" else text))
        self.kind = "p"
        return True

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "body" and self.skip and self.skip[0] == "head":   # an unclosed <head>
            self.skip = []
        if self.skip:
            if tag not in _VOID:
                self.skip.append(tag)
            return
        names = " ".join(value or "" for key, value in attrs if key in ("class", "id"))
        tokens = set(re.split(r"[\s\-_]+", names.lower()))
        hidden = tokens & _SKIP_TOKENS or ("aria-hidden", "true") in attrs
        if tag in _SKIP_TAGS or (hidden and tag not in ("html", "body", "main")):
            if tag not in _VOID:
                self.skip.append(tag)
            return
        if tag == "br":
            self.buffer.append("\n" if self.pre else "\0")
        elif tag in _BLOCK:
            self.flush()
            if "question" in tokens:   # DocBook qandaset rows, FAQ widgets: an entry of a FAQ
                self.kind = "dt"
            elif tag in _KIND_TAGS:   # other blocks inside an item keep the item's kind
                self.kind = tag
            if tag == "pre":
                self.pre += 1
        elif tag in ("td", "th") and "".join(self.buffer).strip():
            self.buffer.append(" | ")

    def handle_endtag(self, tag: str) -> None:
        if self.skip:
            if tag in self.skip:
                while self.skip and self.skip.pop() != tag:
                    pass
            return
        if tag in _BLOCK:
            flushed = self.flush()
            if tag == "pre":
                self.pre = max(0, self.pre - 1)
            if not flushed and tag in _KIND_TAGS:
                self.kind = "p"

    def handle_data(self, data: str) -> None:
        if not self.skip:
            self.buffer.append(data)


def html_to_text(html: str) -> tuple[str, list[int], list[int]]:
    """(text, heading offsets, question offsets) of an HTML page: scripts, styles, navigation and
    hidden elements dropped; one paragraph per block; list items and table rows on their own lines;
    <pre> kept verbatim. The text is normalised (see normalize). Question offsets: <dt> entries and
    short paragraphs ending in `?` (the entries of a FAQ)."""
    parser = _HTMLText()
    parser.feed(html)
    parser.close()
    parser.flush()
    parts: list[str] = []
    headings: list[int] = []
    questions: list[int] = []
    pos = 0
    previous = ""
    for kind, block in parser.blocks:
        if parts:
            sep = "\n" if kind in _TIGHT and previous == kind else "\n\n"
            parts.append(sep)
            pos += len(sep)
        offset = pos + len(block) - len(block.lstrip())
        if kind in ("h1", "h2", "h3", "h4", "h5", "h6"):
            headings.append(offset)
        elif kind == "dt" or (kind == "p" and len(block) < 300 and block.endswith("?")):
            questions.append(offset)
        parts.append(block)
        pos += len(block)
        previous = kind
    return "".join(parts), headings, questions
