"""Answer-token KL of block attention on three question distributions, base model against an
adapter: is what the adapter learned tied to the text it was trained on, or to the kind of
question?

- python-ref: the training data's own kind (templated questions about a term, over passages of
  the Python reference manual: the shipped adapter's corpus, new groupings and questions);
- debian-docs: the same templated questions over text the adapter never saw (README files under
  /usr/share/doc, minus what segmentation keeps out of training);
- qa-dev: the fidelity set's dev split (short factual questions about fictional entities).

Each distribution gets --questions questions; KL as in bench/fidelity.py (the engine's served
path against full attention's greedy answers). On 2 CPU cores, 20 questions each: about 35 min.

    python bench/fidelity_domains.py [--questions 20] [--adapter FILE]
"""

from __future__ import annotations

import argparse
import glob
import gzip
import random
import time
from pathlib import Path

import torch

from blockrag.attention import BlockAttentionEngine
from blockrag.distill.adapter import Adapter
from blockrag.distill.data import DataConfig, pack_blocks, templated_questions
from blockrag.distill.fidelity import FidelityProbe, Question, qa_questions, served_engine
from blockrag.distill.training import default_corpus
from blockrag.models import load_model
from blockrag.prompt import PromptTemplate
from blockrag.segment.train.prose import forbidden

SHIPPED = Path(__file__).resolve().parents[1] / "libs/blockrag/distill/default_adapter/adapter.safetensors"


def templated(documents: list[str], tokenizer, n: int, rng: random.Random) -> list[Question]:
    passages = [b for d in documents for b in pack_blocks(d, tokenizer, DataConfig())]
    pairs = templated_questions(passages, rng)
    return [Question(tuple(group), question, lambda text: False) for group, question in (next(pairs) for _ in range(n))]


def debian_readmes() -> list[str]:
    out = []
    for path in sorted(glob.glob("/usr/share/doc/*/README*")):
        if forbidden(path) or path.endswith(".html"):
            continue
        try:
            text = gzip.open(path, "rt").read() if path.endswith(".gz") else open(path).read()
        except (OSError, UnicodeDecodeError):
            continue
        if 2000 < len(text) < 40000:
            out.append(text)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--questions", type=int, default=20)
    parser.add_argument("--adapter", type=Path, default=SHIPPED)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, tokenizer = load_model(None, device="cpu")
    template, rng = PromptTemplate(tokenizer), random.Random(123)
    sets = {"python-ref": templated(default_corpus(), tokenizer, args.questions, rng),
            "debian-docs": templated(debian_readmes(), tokenizer, args.questions, rng),
            "qa-dev": qa_questions(args.questions, "dev")}
    adapter = Adapter.from_bytes(args.adapter.read_bytes())
    adapted = served_engine(adapter, load_model(None, device="cpu")[0])
    base = BlockAttentionEngine(model, fuse=False)
    for name, questions in sets.items():
        started = time.perf_counter()
        probe = FidelityProbe(base, template, questions)
        b, a = probe.score(base), probe.score(adapted)
        print(f"{name}: {len(questions)} questions, {b.answer_tokens} answer tokens: base KL {b.kl:.4f}, "
              f"adapter KL {a.kl:.4f}, ratio {a.kl / b.kl:.2f} ({time.perf_counter() - started:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
