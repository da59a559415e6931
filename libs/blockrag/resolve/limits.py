"""ResolveLimits: the bounds every block resolution enforces, wherever it runs."""

from __future__ import annotations

from dataclasses import dataclass

from blockrag.errors import InvalidRequestError, LimitExceededError


@dataclass(frozen=True)
class ResolveLimits:
    """The platform takes these from its config (PlatformConfig.limits); the local pipeline
    runs with the defaults. Checked here only, so every caller refuses alike."""

    max_context_blocks: int = 64
    max_context_tokens: int = 8192  # the prompt: opening block + context blocks + question
    max_block_tokens: int = 1024  # one block, as the encoder takes it
    max_question_tokens: int = 512  # the final block: question and the answer's opening

    def __post_init__(self) -> None:
        for name in ("max_context_blocks", "max_context_tokens", "max_block_tokens", "max_question_tokens"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidRequestError(f"limits: {name} must be an int >= 1, got {value!r}")

    @classmethod
    def of(cls, settings: object) -> ResolveLimits:
        """The limits named alike in a larger settings object (the platform's config Limits)."""
        return cls(settings.max_context_blocks, settings.max_context_tokens, settings.max_block_tokens,
                   settings.max_question_tokens)

    @classmethod
    def unbounded(cls) -> ResolveLimits:
        """No practical bound: a user's own process (the local pipeline) over its own documents."""
        return cls(max_context_blocks=1 << 30, max_context_tokens=1 << 40, max_block_tokens=1 << 30,
                   max_question_tokens=1 << 30)

    def check_blocks(self, n: int, what: str = "context blocks") -> None:
        if n > self.max_context_blocks:
            raise LimitExceededError(f"{n} {what}, over the limit of {self.max_context_blocks}")

    def check_block_tokens(self, lengths: list[int]) -> None:
        too_long = [n for n in lengths if n > self.max_block_tokens]
        if too_long:
            raise LimitExceededError(
                f"{len(too_long)} block(s) are over the limit of {self.max_block_tokens} tokens "
                f"(the first has {too_long[0]}); segment the text into smaller blocks")

    def check_question(self, tokens: int) -> None:
        if tokens > self.max_question_tokens:
            raise LimitExceededError(f"the question is {tokens} tokens, over the limit of {self.max_question_tokens}")

    def check_prompt(self, context_tokens: int, question_tokens: int) -> None:
        if context_tokens + question_tokens > self.max_context_tokens:
            raise LimitExceededError(
                f"context ({context_tokens} tokens) and question ({question_tokens}) exceed the limit of "
                f"{self.max_context_tokens} tokens; pass fewer blocks")


@dataclass(frozen=True)
class IngestLimits:
    """The bounds of one Ingest request, checked on the request alone before any document is
    segmented, encoded or registered (PlatformConfig.limits names them alike)."""

    max_ingest_documents: int = 1000
    max_document_bytes: int = 4 << 20  # one document's UTF-8 text
    max_ingest_bytes: int = 16 << 20  # every document of the request together

    def __post_init__(self) -> None:
        for name in ("max_ingest_documents", "max_document_bytes", "max_ingest_bytes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidRequestError(f"limits: {name} must be an int >= 1, got {value!r}")

    @classmethod
    def of(cls, settings: object) -> IngestLimits:
        return cls(settings.max_ingest_documents, settings.max_document_bytes, settings.max_ingest_bytes)

    def check(self, documents: list[tuple[str, str]]) -> None:
        """``documents``: (id, text) in request order."""
        if len(documents) > self.max_ingest_documents:
            raise LimitExceededError(f"{len(documents)} documents in one request, over the limit of "
                                     f"{self.max_ingest_documents}; send them in batches")
        sizes = [len(text.encode()) for _, text in documents]
        large = [(doc_id, n) for (doc_id, _), n in zip(documents, sizes) if n > self.max_document_bytes]
        if large:
            raise LimitExceededError(
                f"document {large[0][0]!r:.60} is {large[0][1]} bytes, over the limit of {self.max_document_bytes} "
                f"per document{f' ({len(large)} documents are)' if len(large) > 1 else ''}; split it")
        if sum(sizes) > self.max_ingest_bytes:
            raise LimitExceededError(f"the documents total {sum(sizes)} bytes, over the limit of "
                                     f"{self.max_ingest_bytes} per request; send them in batches")
