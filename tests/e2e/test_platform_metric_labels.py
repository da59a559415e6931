"""Bounded tenant labels against the running platform (issue 14, item 9): asks under made-up
tenants (literal context, nothing ingested, no key) add no series of their own; they count under
tenant "other"."""

from __future__ import annotations

import urllib.request
import uuid

from calls import ask

from blockrag.v1 import generation_pb2 as pb


def scrape(platform) -> str:
    return urllib.request.urlopen(f"http://{platform.metrics}/metrics", timeout=10).read().decode()


def other_prompts(text: str) -> float:
    line = 'blockrag_prompt_tokens_total{tenant="other"} '
    return sum(float(x.split()[-1]) for x in text.splitlines() if x.startswith(line))


def test_made_up_tenants_fold_into_other(platform, generation):
    run = uuid.uuid4().hex[:8]
    before = other_prompts(scrape(platform))
    prompts = 0
    for i in range(3):
        _, usage = ask(generation, pb.GenerateRequest(question="What is it?", tenant=f"made-up-{run}-{i}",
                                                      max_new_tokens=2,
                                                      context=[pb.ContextBlock(text=f"Note {i} of run {run}.")]))
        prompts += usage.prompt_tokens
    text = scrape(platform)
    assert f"made-up-{run}" not in text
    assert other_prompts(text) == before + prompts
