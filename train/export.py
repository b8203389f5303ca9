"""``e2e-voice export``: turn a training run into the small checkpoint that gets shipped.

    e2e-voice export codec runs/train_codec/codec_cpu_v2 checkpoints/codec_cpu/codec.safetensors
    e2e-voice export codec runs/train_codec/codec_cpu_v2 averaged.safetensors --ema 0.999
    e2e-voice export lm runs/train_lm/lm_tiny_v1 checkpoints/lm_tiny \\
        --codec checkpoints/codec_cpu/codec.safetensors

Both keep float16 weights by default (``--dtype float32`` keeps full precision). The codec export
keeps its RVQ codebook buffers in float32 (see :func:`e2e_voice.codec.save_codec`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch

from e2e_voice.codec import load_codec, save_codec
from e2e_voice.lm.export import save_export
from train.ema import ema_tag

DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": None}


def export_codec(
    src: str | Path, dst: str | Path, dtype: torch.dtype | None = torch.float16, ema: float | None = None
) -> Path:
    """A ``train-codec`` run directory (or its ``codec.safetensors``) -> one shippable file.

    Args:
        src: the run directory or a codec file.
        dst: the file to write.
        dtype: the weights' dtype (``None`` keeps float32).
        ema: take the run's weights averaged with this decay (``ema_decays`` in training) instead of the
            last step's; needs a run directory.

    Raises:
        FileNotFoundError: no such run or file, or the run kept no average with that decay.
    """
    path = Path(src)
    if ema is not None:
        if not path.is_dir():
            raise FileNotFoundError(f"--ema needs a train-codec run directory; {path} is not one")
        name = f"codec_{ema_tag(ema)}.safetensors"
        if not (path / name).is_file():
            kept = sorted(p.name for p in path.glob("codec_ema*.safetensors"))
            raise FileNotFoundError(
                f"{path} holds no {name}; its weight averages: {kept or 'none (train with ema_decays=[...])'}"
            )
        path = path / name
    if path.is_dir():
        path = path / "codec.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"no codec checkpoint at {path}: train one with `e2e-voice train-codec`")
    return save_codec(load_codec(path), dst, dtype=dtype)


def export_lm(
    run: str | Path,
    out_dir: str | Path,
    codec_checkpoint: str | Path | None,
    dtype: torch.dtype | None = torch.float16,
) -> Path:
    """A ``train-lm`` run directory (or its ``checkpoint.pt`` or ``best.pt``) -> an export directory.

    Raises:
        FileNotFoundError: the run or the codec checkpoint is missing.
        ValueError: a LoRA run (its adapters are not merged into the base weights here).
    """
    path = Path(run)
    if path.is_dir():
        path = path / "checkpoint.pt"
    if not path.is_file():
        raise FileNotFoundError(f"no LM checkpoint at {path}: train one with `e2e-voice train-lm`")
    ckpt: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=False)
    lm_cfg = dict(ckpt["config"]["lm"])
    if (lm_cfg.get("lora") or {}).get("enabled"):
        raise ValueError(f"{path} is a LoRA run: export its base model with the adapters merged first")
    if codec_checkpoint is None:
        codec_checkpoint = ckpt["config"].get("codec", {}).get("checkpoint")
    if codec_checkpoint is None or not Path(codec_checkpoint).is_file():
        raise FileNotFoundError(
            f"the codec the LM was trained on is needed next to it (--codec PATH); got {codec_checkpoint}"
        )
    tok = ckpt.get("tokenizer")
    metrics = path.parent / "metrics.jsonl"
    last = json.loads(metrics.read_text().splitlines()[-1]) if metrics.is_file() else {}
    source = {"run": str(path.parent), "file": path.name, "step": int(ckpt["step"]), "last_metrics": last}
    if ckpt.get("best"):  # best.pt (or a checkpoint that knows the best so far): which validation it was
        source["best"] = ckpt["best"]
    return save_export(
        out_dir,
        ckpt["model"],
        lm_cfg,
        tokenizer=path.parent / tok if tok else None,
        codec_checkpoint=codec_checkpoint,
        dtype=dtype,
        source=source,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="e2e-voice export", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    c = sub.add_parser("codec", help="train-codec run (or codec.safetensors) -> one safetensors file")
    c.add_argument("src")
    c.add_argument("dst")
    c.add_argument(
        "--ema",
        type=float,
        default=None,
        metavar="DECAY",
        help="export the run's weight average with this decay",
    )
    m = sub.add_parser("lm", help="train-lm run (or checkpoint.pt) -> export directory")
    m.add_argument("src")
    m.add_argument("dst")
    m.add_argument("--codec", default=None, help="the codec checkpoint the LM was trained on")
    for p in (c, m):
        p.add_argument("--dtype", choices=sorted(DTYPES), default="float16")
    ns = parser.parse_args(argv)
    try:
        if ns.what == "codec":
            out = export_codec(ns.src, ns.dst, DTYPES[ns.dtype], ema=ns.ema)
        else:
            out = export_lm(ns.src, ns.dst, ns.codec, DTYPES[ns.dtype])
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    size = sum(f.stat().st_size for f in ([out] if out.is_file() else out.iterdir()))
    print(f"wrote {out} ({size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
