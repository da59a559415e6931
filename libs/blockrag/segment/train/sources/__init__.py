"""Corpus sources for SemanticSeg-style data: files become Documents (text, category, own structure).

One module per kind of source it parses: corpus.py (the default corpora and their licences, which
files are read), documents.py (reading a file, its category), structure.py (where a document's own
segments begin, by format) with its parsers markup.py (Markdown, AsciiDoc, rST, plain text, POD,
package METADATA), html.py, man.py, faq.py, chat.py and code.py (Python, brace languages);
lines.py holds the line helpers they share.
"""

from blockrag.segment.train.sources.corpus import (
    CATEGORIES,
    HELD_OUT_SOURCES,
    TRAIN_SOURCES,
    CorpusSource,
    default_sources,
    iter_files,
)
from blockrag.segment.train.sources.documents import MAX_FILE_BYTES, Document, iter_documents, read_document
from blockrag.segment.train.sources.html import html_to_text
from blockrag.segment.train.sources.lines import normalize
from blockrag.segment.train.sources.structure import structure_starts

__all__ = ["CATEGORIES", "HELD_OUT_SOURCES", "MAX_FILE_BYTES", "TRAIN_SOURCES", "CorpusSource", "Document",
           "default_sources", "html_to_text", "iter_documents", "iter_files", "normalize", "read_document",
           "structure_starts"]
