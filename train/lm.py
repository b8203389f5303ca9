"""``e2e-voice train-lm``: train the joint speech-text model (Hydra + accelerate).

    e2e-voice train-lm                                  # 5-step CPU smoke run on a synthesized corpus
    e2e-voice train-lm +experiment=lm_tiny_cpu          # the tiny CPU recipe (<= 2 h on 2 cores)
    accelerate launch --multi_gpu --num_processes 2 -m train.lm train.steps=4   # 2-process data parallel

(On a CPU-only machine ``--multi_gpu`` starts torchrun and the trainer's ``Accelerator(cpu=True)``
makes it gloo data parallel; accelerate 1.x's ``--cpu --num_processes 2`` starts only one process.)

The loop owns the model, optimizer (AdamW), warm-up + cosine schedule, per-stream loss
(:mod:`e2e_voice.lm.loss`), validation per stream, wandb logging (offline unless
``train.wandb.mode=online``) and atomic checkpoints that resume exactly (model, optimizer,
scheduler, step, RNG states, sampler position, config).
"""

from __future__ import annotations

import json
import logging
import math
import random
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from e2e_voice.constants import CONFIG_DIR
from e2e_voice.lm.builders import BuiltLM, build_from_config
from e2e_voice.lm.loss import LMLoss, LossWeights, lm_loss
from e2e_voice.lm.model import count_parameters, eager_on_cpu
from e2e_voice.lm.streams import hide_user_levels
from train.checkpoint import (
    CheckpointError,
    load_checkpoint,
    remove_stale_tmp,
    rng_state,
    save_checkpoint,
    set_rng_state,
    truncate_metrics,
)
from train.checks import check_train
from train.device import use_cuda
from train.lm_data import (
    StreamSampler,
    batches,
    check_streams_codec,
    check_streams_corpus,
    codec_fingerprint,
    corpus_fingerprint,
    load_streams,
    make_smoke_corpus,
    streams_from_manifest,
    validation_batches,
)

log = logging.getLogger(__name__)
CHECKPOINT = "checkpoint.pt"


def warmup_cosine(step: int, *, warmup: int, total: int, min_ratio: float) -> float:
    """LR multiplier: linear warm-up to 1 over ``warmup`` steps, then cosine down to ``min_ratio``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def resolve_resume(resume: Any, out_dir: Path) -> Path | None:
    """The checkpoint to continue from, or None to start at step 0.

    ``lm_train.resume``: true (the default) continues from ``<out_dir>/checkpoint.pt`` when it exists, as
    the codec trainer does, so rerunning a command never silently starts a finished run over; a path (a
    checkpoint file, or a run directory holding ``checkpoint.pt``) continues from that; false starts over,
    overwriting the run directory's checkpoint.
    """
    if resume is None or resume is False:
        return None
    if resume is True:
        own = out_dir / CHECKPOINT
        return own if own.is_file() else None
    p = Path(str(resume))
    if p.is_dir():
        p = p / CHECKPOINT
    if not p.is_file():
        raise FileNotFoundError(
            f"lm_train.resume={resume}: no checkpoint at {p}; pass a checkpoint.pt or its run directory,"
            " or lm_train.resume=false to start over"
        )
    return p


def _restore(
    resume: Path,
    ckpt: dict[str, Any],
    model: torch.nn.Module,
    optimizer: Any,
    scheduler: Any,
    sampler: StreamSampler,
    accelerator: Any,
) -> int:
    """Load the checkpoint ``ckpt`` (read from ``resume``) into the run's objects and the global RNGs;
    returns its step."""
    try:
        missing, unexpected = model.load_state_dict(ckpt["model"], strict=False)
        if unexpected or (missing and all(p.requires_grad for p in model.parameters())):
            raise CheckpointError(f"missing {missing}, unexpected {unexpected}")
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
    except (KeyError, RuntimeError, ValueError) as exc:
        raise CheckpointError(
            f"checkpoint {resume} does not match this run's model ({exc}); resume it with the config it was"
            " trained with, or start over with lm_train.resume=false or another run_name"
        ) from exc
    if len(ckpt["sampler"]) != accelerator.num_processes:
        raise ValueError(
            f"{resume} was written by {len(ckpt['sampler'])} process(es); resume it with the same "
            f"number (got {accelerator.num_processes}) so that every data shard continues exactly"
        )
    sampler.load_state_dict(ckpt["sampler"][accelerator.process_index])
    set_rng_state(ckpt["rng"])
    log.info("resumed from %s at step %d", resume, int(ckpt["step"]))
    return int(ckpt["step"])


def _trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Everything for a full model; only the trainable (LoRA) tensors when most weights are frozen."""
    frozen = any(not p.requires_grad for p in model.parameters())
    if not frozen:
        return model.state_dict()
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    return {k: v for k, v in model.state_dict().items() if k in names}


def prepare_data(cfg: DictConfig, lm_cfg: dict[str, Any]) -> tuple[list[torch.Tensor], dict[str, Any]]:
    """Load the streams file, synthesising the smoke corpus first when it does not exist."""
    path = Path(cfg.lm_data.streams)
    manifests = cfg.lm_data.get("manifests")
    train_manifests = list(manifests.train) if manifests else []
    valid_manifests = list(manifests.get("valid") or []) if manifests else []
    codec_id = codec_fingerprint(cfg.codec.get("checkpoint"))
    if not path.is_file() and manifests:
        from hydra.utils import instantiate

        log.info("no streams at %s: encoding the corpus %s", path, train_manifests)
        streams_from_manifest(
            path,
            instantiate(cfg.codec, _convert_="all"),
            int(lm_cfg["n_q"]),
            train_manifests,
            valid_manifests,
            vocab_size=int(lm_cfg.get("text_card", 2000)),
            codec_id=codec_id,
        )
    if not path.is_file():
        if not cfg.lm_data.smoke_conversations:
            raise FileNotFoundError(
                f"lm_data.streams={path} does not exist and lm_data.smoke_conversations=0"
            )
        from hydra.utils import instantiate

        log.info(
            "no streams at %s: synthesizing %d smoke conversations", path, cfg.lm_data.smoke_conversations
        )
        codec = instantiate(cfg.codec, _convert_="all")
        make_smoke_corpus(
            path.parent,
            codec,
            int(lm_cfg["n_q"]),
            num_conversations=int(cfg.lm_data.smoke_conversations),
            vocab_size=int(lm_cfg.get("text_card", 2000)),
            assistant_voice=str(cfg.lm_data.get("assistant_voice", "espeak")),
            codec_id=codec_id,
        )
    streams, meta = load_streams(path)
    check_streams_codec(path, meta, codec_id)
    if manifests:
        check_streams_corpus(path, meta, corpus_fingerprint([*valid_manifests, *train_manifests]))
    if int(meta["n_q"]) != int(lm_cfg["n_q"]):
        raise ValueError(f"{path} holds n_q={meta['n_q']} codebooks per speaker but lm.n_q={lm_cfg['n_q']}")
    return streams, meta


BEST = "best.pt"
"""The weights of the best validation (``lm_train.best_metric``), beside ``checkpoint.pt``; the engine and
``e2e-voice export lm`` take its path like a checkpoint's."""
VAL_METRICS = ("val/loss", "val/loss/text", "val/loss/semantic", "val/loss/acoustic")


def _best_metric(name: Any) -> str | None:
    """``lm_train.best_metric``: a validation loss to keep the best checkpoint by, or null for none."""
    if name is None:
        return None
    if name not in VAL_METRICS:
        raise ValueError(
            f"lm_train.best_metric must be one of {', '.join(VAL_METRICS)} or null, got {name!r}"
        )
    return str(name)


def evaluate(
    model: torch.nn.Module, val: list[torch.Tensor], weights: LossWeights, built: BuiltLM, device
) -> dict:
    """Mean per-stream validation loss (batches weighted equally)."""
    model.eval()
    sums: dict[str, float] = {}
    with torch.no_grad():
        for batch in val:
            codes = batch.to(device)
            metrics = lm_loss(model(codes), codes, weights, built.specials).metrics("val")
            for k, v in metrics.items():
                sums[k] = sums.get(k, 0.0) + v
    model.train()
    return {k: v / max(1, len(val)) for k, v in sums.items()}


def train(cfg: DictConfig) -> dict[str, Any]:
    """Run training as configured; returns the final metrics (also written to ``metrics.jsonl``).

    The device is checked once, here; on CPU moshi's lazy kernel compilation is off for the whole run
    (it costs ~20 s per process there and gains nothing at these sizes).
    """
    on_gpu = use_cuda(str(cfg.device))
    with eager_on_cpu("cuda" if on_gpu else "cpu"):
        return _train(cfg, on_gpu)


def _train(cfg: DictConfig, on_gpu: bool) -> dict[str, Any]:
    from accelerate import Accelerator

    tcfg, lcfg = cfg.train, cfg.lm_train
    check_train(tcfg)
    if tcfg.precision not in ("fp32", "bf16"):
        raise ValueError(f"train.precision must be fp32 or bf16, got {tcfg.precision!r}")
    accelerator = Accelerator(
        cpu=not on_gpu,
        mixed_precision="bf16" if (tcfg.precision == "bf16" and on_gpu) else "no",  # fp32 on CPU
        gradient_accumulation_steps=int(tcfg.grad_accum),
    )
    out_dir = Path(cfg.out_dir)
    # Read the checkpoint before any data or model work, so that a wrong one is refused at once.
    resume = resolve_resume(lcfg.resume, out_dir)
    hint = "pass another lm_train.resume=PATH, or lm_train.resume=false to start over"
    ckpt = load_checkpoint(resume, hint=hint) if resume is not None else {}
    if lcfg.get("num_threads"):
        # On a CPU shared with other jobs, 2 threads per process oversubscribe the cores: the tiny LM's
        # training step measured 6x slower with 2 threads than with 1 at a load average of ~8.
        torch.set_num_threads(int(lcfg.num_threads))
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)

    lm_cfg: dict[str, Any] = OmegaConf.to_container(cfg.lm, resolve=True)  # type: ignore[assignment]
    with accelerator.main_process_first():
        streams, meta = prepare_data(cfg, lm_cfg)
    tokenizer_path = lm_cfg.get("tokenizer") or meta.get("tokenizer")
    built = build_from_config(lm_cfg, tokenizer_path=tokenizer_path)
    run_tokenizer = None
    if tokenizer_path and accelerator.is_main_process:
        # A run directory is self-contained: the engine loads model, tokenizer and codec from it alone.
        out_dir.mkdir(parents=True, exist_ok=True)
        run_tokenizer = out_dir / "tokenizer.model"
        if Path(tokenizer_path).resolve() != run_tokenizer.resolve():
            shutil.copyfile(tokenizer_path, run_tokenizer)
    model = built.model
    model.train()
    if meta.get("n_valid"):  # a corpus streams file puts its validation conversations first
        n_val = int(meta["n_valid"])
    else:
        n_val = max(1, int(len(streams) * float(cfg.lm_data.val_fraction))) if len(streams) > 1 else 0
    train_streams, val_streams = streams[n_val:], streams[:n_val]
    seq_len = int(cfg.lm_data.seq_len)
    # A model with lm.user_levels < n_q never hears the user's other codebooks (hide_user_levels).
    val = [
        hide_user_levels(b, built.n_q, built.user_levels)
        for b in validation_batches(val_streams or train_streams[:1], int(tcfg.batch_size), seq_len)
    ]
    best_metric = _best_metric(lcfg.get("best_metric"))

    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": float(lcfg.weight_decay)},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=float(tcfg.lr),
        betas=(0.9, 0.95),
    )
    total = int(tcfg.steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: warmup_cosine(
            s, warmup=int(tcfg.warmup_steps), total=total, min_ratio=float(lcfg.min_lr_ratio)
        ),
    )
    sampler = StreamSampler(
        len(train_streams),
        seed=int(cfg.seed),
        rank=accelerator.process_index,
        world=accelerator.num_processes,
    )
    step = 0 if resume is None else _restore(resume, ckpt, model, optimizer, scheduler, sampler, accelerator)
    best: dict[str, Any] | None = ckpt.get("best")  # the best validation so far, carried across resumes
    ckpt.clear()  # the loaded copy of the weights and optimizer state is not needed any more
    if accelerator.is_main_process:
        remove_stale_tmp(out_dir / CHECKPOINT)
        truncate_metrics(out_dir / "metrics.jsonl", step)  # a killed run's rows past its checkpoint
    model, optimizer = accelerator.prepare(model, optimizer)
    weights = LossWeights(**OmegaConf.to_container(lcfg.loss_weights))  # type: ignore[arg-type]

    run = None
    if accelerator.is_main_process and tcfg.wandb.mode != "disabled":
        import wandb

        run = wandb.init(
            project=tcfg.wandb.project,
            mode=tcfg.wandb.mode,
            dir=str(out_dir),
            name=str(cfg.run_name),
            config=OmegaConf.to_container(cfg, resolve=True),  # type: ignore[arg-type]
        )
    if accelerator.is_main_process:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
        log.info(
            "LM %s: %.2fM parameters (%.2fM trainable), %d train / %d val conversations, %d process(es)",
            lm_cfg["name"],
            count_parameters(model) / 1e6,
            count_parameters(model, trainable_only=True) / 1e6,
            len(train_streams),
            len(val_streams),
            accelerator.num_processes,
        )

    def log_metrics(metrics: dict[str, float]) -> None:
        if not accelerator.is_main_process:
            return
        with open(out_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps({"step": step, **metrics}) + "\n")
        if run is not None:
            run.log(metrics, step=step)

    def weights_state() -> dict[str, Any]:
        """What the engine and the exporter read: weights, step, config, delays, tokenizer, best so far."""
        return {
            "model": _trainable_state(accelerator.unwrap_model(model)),
            "step": step,
            "config": OmegaConf.to_container(cfg, resolve=True),
            "lm_kwargs": {"delays": built.delays, "n_q": built.n_q},
            "tokenizer": run_tokenizer.name if run_tokenizer is not None else None,
            "best": best,
        }

    def checkpoint() -> None:
        # Every rank's sampler position, so that each resumes its own shard exactly.
        sampler_states = accelerator.gather(
            torch.tensor([[sampler.epoch, sampler.position]], device=accelerator.device)
        )
        if not accelerator.is_main_process:
            return
        save_checkpoint(
            out_dir / CHECKPOINT,
            {
                **weights_state(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "rng": rng_state(),
                "sampler": [
                    {"epoch": int(e), "position": int(p), "seed": sampler.seed}
                    for e, p in sampler_states.tolist()
                ],
            },
        )

    def keep_best(metrics: dict[str, float]) -> None:
        """Save the weights as best.pt when ``best_metric`` beats every validation before it."""
        nonlocal best
        if best_metric is None or not accelerator.is_main_process:
            return
        value = float(metrics[best_metric])
        if best is not None and value >= float(best["value"]):
            return
        best = {"metric": best_metric, "value": value, "step": step}
        save_checkpoint(out_dir / BEST, weights_state())

    data = batches(train_streams, sampler, int(tcfg.batch_size), seq_len)
    bar = tqdm(
        total=total, initial=step, desc="train-lm", unit="step", disable=not accelerator.is_main_process
    )
    last: dict[str, float] = {}
    frames = 0
    t0 = time.perf_counter()
    stop_after = int(lcfg.stop_after) if lcfg.get("stop_after") else total
    start_step = step
    if resume is not None and step >= min(total, stop_after):
        log.info("%s is already at step %d of %d: nothing to train", resume, step, total)
    while step < min(total, stop_after):
        for _ in range(int(tcfg.grad_accum)):
            codes = hide_user_levels(next(data), built.n_q, built.user_levels).to(accelerator.device)
            with accelerator.accumulate(model), accelerator.autocast():
                loss: LMLoss = lm_loss(model(codes), codes, weights, built.specials)
                accelerator.backward(loss.total)
                if accelerator.sync_gradients and float(lcfg.grad_clip) > 0:
                    accelerator.clip_grad_norm_(params, float(lcfg.grad_clip))
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            frames += int((codes[:, 0] >= 0).sum()) * accelerator.num_processes
        scheduler.step()
        step += 1
        bar.update(1)
        last = loss.metrics("train")
        if step % int(tcfg.log_every) == 0 or step in (total, stop_after):
            elapsed = time.perf_counter() - t0
            last |= {
                "train/lr": float(scheduler.get_last_lr()[0]),
                "train/frames_per_s": frames / max(elapsed, 1e-9),
            }
            bar.set_postfix(loss=f"{last['train/loss']:.3f}")
            log_metrics(last)
        if int(lcfg.val_every) and step % int(lcfg.val_every) == 0 and step < total:
            metrics = evaluate(model, val, weights, built, accelerator.device)
            log_metrics(metrics)
            keep_best(metrics)
        if step % int(tcfg.save_every) == 0 or step in (total, stop_after):
            checkpoint()
    bar.close()
    final = {**last, **evaluate(model, val, weights, built, accelerator.device)}
    if step > start_step:  # a rerun of a finished run logs nothing twice
        log_metrics(final)
        keep_best(final)
    if run is not None:
        run.finish()
    accelerator.wait_for_everyone()
    return final


@hydra.main(config_path=str(CONFIG_DIR), config_name="train_lm", version_base="1.3")
def _hydra_main(cfg: DictConfig) -> None:
    train(cfg)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``e2e-voice train-lm`` (Hydra overrides in ``sys.argv``)."""
    _hydra_main()
    return 0


if __name__ == "__main__":
    sys.exit(main())
