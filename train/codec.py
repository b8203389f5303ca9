"""``e2e-voice train-codec``: train a Mimi codec (Hydra + accelerate).

Losses (namespaced keys): ``rec/mel`` multi-scale log-mel L1 and ``rec/l1`` waveform L1;
``spec/amp`` and ``spec/phase`` direct supervision of a spectral decoder's STFT frames (log-magnitude L1,
anti-wrapped phase errors; ``frontend: spectral`` codecs only);
``adv/gen`` hinge loss and ``adv/feat`` feature matching against a multi-scale STFT (``disc.kind: stft``)
or log-mel (``mel``) discriminator (``disc/loss``); ``vq/commit`` RVQ commitment (moshi's codebooks
follow an EMA of their assigned latents and replace dead entries in training mode, so they need no
gradient); ``distill/cos`` cosine distance between the projected first (semantic) level and a frozen
teacher's features.
Quantizer dropout: with probability ``quantizer_dropout`` a batch uses a random number of levels.
Weight averages: ``ema_decays: [0.999]`` keeps an exponential moving average of the codec's weights per
decay (:mod:`train.ema`), written beside the live weights as ``codec_ema0.999.safetensors``; they only
read the model, so the run trains exactly as without them.

A run lives in ``runs/train_codec/<run_name>/``: ``checkpoint.pt`` (everything to resume exactly,
written atomically), ``codec.safetensors`` (Kyutai's format + our architecture metadata, loadable
with ``e2e_voice.codec.load_codec``), ``metrics.jsonl`` and wandb's offline files. Running the same
command with the same ``run_name`` continues from the last checkpoint.

    e2e-voice train-codec +experiment=codec_cpu_deep run_name=cpu1
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import hydra
import torch
from accelerate import Accelerator
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from e2e_voice.codec import MimiCodec, save_codec
from e2e_voice.codec.stft_layers import SpectralDecoder
from e2e_voice.constants import CONFIG_DIR, repo_path
from train.checkpoint import (
    load_checkpoint,
    remove_stale_tmp,
    rng_state,
    save_checkpoint,
    set_rng_state,
    truncate_metrics,
)
from train.checks import check_train
from train.codec_data import CropSampler, find_audio
from train.codec_losses import (
    DistillationHead,
    ReconstructionLoss,
    SpectrumLoss,
    build_discriminator,
    discriminator_loss,
    generator_losses,
)
from train.device import use_cuda
from train.ema import WeightAverages
from train.teachers import Teacher, TeacherCache

log = logging.getLogger(__name__)
LOSS_KEYS = ("rec/mel", "rec/l1", "spec/amp", "spec/phase", "adv/gen", "adv/feat", "vq/commit", "distill/cos")


def _codebooks(codec: MimiCodec) -> list[torch.nn.Module]:
    return [m for m in codec.model.modules() if hasattr(m, "_next_unused_check")]


def _lr_lambda(warmup: int, total: int) -> Any:
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(warmup, 1)
        progress = (step - warmup) / max(total - warmup, 1)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))  # cosine to 10%

    return f


def _cache_budget(max_gb: Any) -> int | None:
    """``distill_cache_max_gb`` in bytes (None: no limit), or a ValueError naming the setting."""
    if max_gb is None:
        return None
    try:
        gb = float(max_gb)
    except (TypeError, ValueError):
        gb = float("nan")
    if not gb > 0:  # also NaN
        raise ValueError(
            f"distill_cache_max_gb={max_gb!r}: give the teacher cache folder's budget as a positive number of"
            " GB, or null for no limit"
        )
    return int(gb * 1e9)


def _sources(data: DictConfig) -> tuple[list[Path], list[float] | None]:
    """The training files and, with ``data.files_share`` set, each file's draw weight.

    ``files_share`` is the fraction of crops drawn from ``data.files`` (the rest from the manifest), so
    that adding a speech set does not dilute the corpus by its file count.
    """
    share = data.get("files_share")
    if share is None:
        return find_audio(data.files, data.manifest, data.audio_key), None
    share = float(share)
    if not 0.0 < share < 1.0 or not data.manifest or not data.files:
        raise ValueError(
            f"data.files_share={share} needs 0 < share < 1, a data.manifest and data.files (it splits the"
            " crops between them); set it to null to draw every clip alike"
        )
    extra = find_audio(data.files)
    in_files = set(extra)
    corpus = [p for p in find_audio(None, data.manifest, data.audio_key) if p not in in_files]
    if not corpus:
        raise ValueError(
            f"data.files_share={share}: every file of data.manifest is also in data.files, so there is no"
            " corpus left to draw the other crops from; point data.files at another set, or set"
            " files_share to null"
        )
    weights = [(1 - share) / len(corpus)] * len(corpus) + [share / len(extra)] * len(extra)
    return corpus + extra, weights


class CodecTrainer:
    """Owns the codec, discriminator, teacher, optimizers, schedulers and data of one run.

    Args:
        cfg: the composed ``train_codec`` config (the only place config is read).
        run_dir: where checkpoints and logs go.
    """

    def __init__(self, cfg: DictConfig, run_dir: Path) -> None:
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        check_train(cfg.train)
        torch.manual_seed(int(cfg.seed))
        if cfg.get("threads"):
            torch.set_num_threads(int(cfg.threads))
        t = cfg.train
        on_gpu = use_cuda(str(cfg.device))
        bf16 = t.precision == "bf16" and on_gpu  # CPU autocast to bf16 hurts conv accuracy here
        self.accelerator = Accelerator(cpu=not on_gpu, mixed_precision="bf16" if bf16 else "no")

        codec: MimiCodec = instantiate(cfg.codec, _convert_="all")
        self.eval_codebooks = codec.num_codebooks
        codec.set_num_codebooks(codec.total_codebooks)  # train every level; dropout picks fewer
        self.frame_size = codec.frame_size
        w = cfg.loss.weights
        self.weights = {k: float(w[k.replace("/", "_")]) for k in LOSS_KEYS}
        crop = round(float(cfg.data.crop_seconds) * codec.frame_rate) * codec.frame_size
        if crop < codec.frame_size:
            raise ValueError(f"data.crop_seconds={cfg.data.crop_seconds} is shorter than one codec frame")
        paths, file_weights = _sources(cfg.data)
        self.data = CropSampler.from_files(
            paths,
            crop,
            seed=int(cfg.seed),
            channels=str(cfg.data.get("channels", "mix")),
            min_rms=float(cfg.data.get("min_rms", 0.0)),
            file_weights=file_weights,
            redraw=str(cfg.data.get("redraw", "clip")),
            speed=cfg.data.get("speed"),
            speed_prob=float(cfg.data.get("speed_prob", 1.0)),
        )
        # Semantic distillation. With distill_cache the teacher's features of the sampler's whole clips are
        # computed once, in a child process (see TeacherCache.compute_in_subprocess), and no teacher lives
        # here; batches passed in by hand need the live teacher, since their origin is unknown.
        self.teacher: Teacher | None = None
        self.teacher_cache: TeacherCache | None = None
        self.distill: DistillationHead | None = None
        if self.weights["distill/cos"] > 0:
            if cfg.get("distill_cache", False):
                container = OmegaConf.to_container(cfg.teacher, resolve=True)
                assert isinstance(container, dict)
                teacher_cfg: dict[str, Any] = {str(k): v for k, v in container.items()}
                cache_dir = cfg.get("distill_cache_dir")
                self.teacher_cache = TeacherCache.load_or_compute(
                    teacher_cfg,
                    self.data.clips,
                    None if not cache_dir else repo_path(str(cache_dir)),
                    max_bytes=_cache_budget(cfg.get("distill_cache_max_gb")),
                )
                teacher_dim = self.teacher_cache.dim
            else:
                self.teacher = instantiate(cfg.teacher)
                teacher_dim = self.teacher.dim
            self.distill = DistillationHead(int(codec.arch.get("dimension", 512)), teacher_dim)
        # The discriminator is built after the distillation head so that the global RNG (initial
        # weights, quantizer dropout) follows the same sequence as the run behind the committed codec.
        self.disc = build_discriminator(
            str(cfg.disc.get("kind", "stft")),
            tuple(int(n) for n in cfg.disc.n_ffts),
            int(cfg.disc.filters),
            codec.sample_rate,
            tuple(int(n) for n in cfg.disc.get("n_mels", ())),
        )
        self.rec = ReconstructionLoss(
            codec.sample_rate,
            tuple(cfg.loss.mel_n_ffts),
            tuple(cfg.loss.mel_n_mels),
            floor=float(cfg.loss.get("mel_floor", 1e-5)),
        )
        self.spectrum_loss = None
        if self.weights["spec/amp"] > 0 or self.weights["spec/phase"] > 0:
            if codec.arch.get("frontend") != "spectral":
                raise ValueError(
                    "loss.weights.spec_amp / spec_phase supervise a spectral decoder; this codec is"
                    f" frontend={codec.arch.get('frontend', 'waveform')!r} (set them to 0)"
                )
            decoder = codec.model.decoder
            assert isinstance(decoder, SpectralDecoder)
            spec_floor = cfg.loss.get("spec_floor")
            self.spectrum_loss = SpectrumLoss(
                decoder.istft.n_fft, decoder.istft.hop, None if spec_floor is None else float(spec_floor)
            )

        gen_params = list(codec.parameters()) + (list(self.distill.parameters()) if self.distill else [])
        betas = (float(cfg.optim.beta1), float(cfg.optim.beta2))
        self.opt_g = torch.optim.AdamW(gen_params, lr=float(t.lr), betas=betas, weight_decay=0.0)
        self.opt_d = torch.optim.AdamW(self.disc.parameters(), lr=float(cfg.disc.lr), betas=betas)
        lam = _lr_lambda(int(t.warmup_steps), int(t.steps))
        self.sched_g = torch.optim.lr_scheduler.LambdaLR(self.opt_g, lam)
        self.sched_d = torch.optim.lr_scheduler.LambdaLR(self.opt_d, lam)

        self.codec, self.disc, self.opt_g, self.opt_d = self.accelerator.prepare(
            codec, self.disc, self.opt_g, self.opt_d
        )
        if self.distill is not None:
            self.distill = self.accelerator.prepare(self.distill)
        # Built after everything that draws from the global RNG, and only reading the codec: a run's
        # trajectory is the same with or without averages (a test checks it).
        decays = list(cfg.get("ema_decays") or [])
        self.ema = WeightAverages(decays) if decays else None
        self.step = 0
        self.history: list[dict[str, float]] = []

    @property
    def unwrapped(self) -> MimiCodec:
        codec: MimiCodec = self.accelerator.unwrap_model(self.codec)
        return codec

    # ---- one step ---------------------------------------------------------------------------
    def train_step(self, batch: torch.Tensor | None = None) -> dict[str, float]:
        """One generator + discriminator update; returns the losses as floats."""
        cfg = self.cfg
        codec = self.unwrapped
        x = (self.data.next_batch(int(cfg.train.batch_size)) if batch is None else batch).to(
            self.accelerator.device
        )
        target = None
        if self.distill is not None:
            if self.teacher_cache is not None and batch is None:
                target = self.teacher_cache.crops(self.data.last_origins, x.shape[-1], self.data.last_spans)
                target = target.to(x.device)
            elif self.teacher is not None:
                target = self.teacher(x)
            else:
                raise RuntimeError(
                    "with distill_cache=true the teacher ran only once, in a child process, over the"
                    " sampler's clips, so a batch passed by hand has no teacher features: call train_step()"
                    " without a batch, or set distill_cache=false"
                )
        total = codec.total_codebooks
        n_q = total
        if torch.rand(()) < float(cfg.quantizer_dropout):
            n_q = int(torch.randint(1, total + 1, ()))
        codec.set_num_codebooks(n_q)
        codec.train()
        self.disc.train()
        adversarial = cfg.adv_start is not None and self.step >= int(cfg.adv_start)

        with self.accelerator.autocast():
            out = self.codec(x)
            losses = dict(self.rec(x, out.audio.float()))
            losses["vq/commit"] = out.commitment
            if self.spectrum_loss is not None and out.spectrum is not None:
                losses.update(self.spectrum_loss(x, out.spectrum.float()))
            if target is not None and self.distill is not None:
                losses["distill/cos"] = self.distill(out.semantic, target)
            if adversarial:
                real = self.disc(x)
                fake = self.disc(out.audio.float())
                losses["adv/gen"], losses["adv/feat"] = generator_losses(real, fake)
        loss = sum(self.weights[k] * v for k, v in losses.items())
        self.opt_g.zero_grad(set_to_none=True)
        self.accelerator.backward(loss)
        self.accelerator.clip_grad_norm_(self.codec.parameters(), float(cfg.grad_clip))
        self.opt_g.step()
        self.sched_g.step()
        if self.ema is not None:
            self.ema.update(codec)

        logs = {k: float(v.detach()) for k, v in losses.items()}
        if adversarial:
            with self.accelerator.autocast():
                d_loss = discriminator_loss(self.disc(x), self.disc(out.audio.detach().float()))
            self.opt_d.zero_grad(set_to_none=True)
            self.accelerator.backward(d_loss)
            self.accelerator.clip_grad_norm_(self.disc.parameters(), float(cfg.grad_clip))
            self.opt_d.step()
            logs["disc/loss"] = float(d_loss.detach())
        self.sched_d.step()
        codec.set_num_codebooks(total)
        logs["loss"] = float(loss.detach())
        logs["vq/levels"] = float(n_q)
        for k in ("rvq_entropy", "rvq_expired"):
            if k in out.metrics:
                logs[f"vq/{k.removeprefix('rvq_')}"] = float(out.metrics[k])
        logs["lr"] = float(self.sched_g.get_last_lr()[0])
        self.step += 1
        return logs

    # ---- checkpoints ------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        acc = self.accelerator
        return {
            "step": self.step,
            "codec": acc.unwrap_model(self.codec).state_dict(),
            # Python-side counters of moshi's codebooks (when to look for dead codes): not in state_dict.
            "codebook_counters": [m._next_unused_check for m in _codebooks(self.unwrapped)],
            "disc": acc.unwrap_model(self.disc).state_dict(),
            "distill": acc.unwrap_model(self.distill).state_dict() if self.distill is not None else None,
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "sched_g": self.sched_g.state_dict(),
            "sched_d": self.sched_d.state_dict(),
            "data": self.data.state_dict(),
            "rng": rng_state(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "history": self.history,
            "config": OmegaConf.to_container(self.cfg, resolve=True),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        acc = self.accelerator
        acc.unwrap_model(self.codec).load_state_dict(state["codec"])
        for m, n in zip(_codebooks(self.unwrapped), state["codebook_counters"], strict=True):
            m._next_unused_check = n
            m._cached_initialized = False  # type: ignore[assignment]
            m.register_buffer("_embedding", None, persistent=False)
        if self.ema is not None:
            if state.get("ema") is None:
                raise ValueError(
                    f"ema_decays={list(self.ema.decays)} but the checkpoint in {self.run_dir} was written"
                    " without weight averages: resume without ema_decays, or start a new run_name"
                )
            self.ema.load_state_dict(state["ema"])
        acc.unwrap_model(self.disc).load_state_dict(state["disc"])
        if self.distill is not None:
            acc.unwrap_model(self.distill).load_state_dict(state["distill"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        self.sched_g.load_state_dict(state["sched_g"])
        self.sched_d.load_state_dict(state["sched_d"])
        self.data.load_state_dict(state["data"])
        set_rng_state(state["rng"])
        self.history = list(state["history"])
        self.step = int(state["step"])

    def save(self) -> Path:
        path = save_checkpoint(self.run_dir / "checkpoint.pt", self.state_dict())
        codec = self.unwrapped
        codec.set_num_codebooks(self.eval_codebooks)
        save_codec(codec, self.run_dir / "codec.safetensors")
        if self.ema is not None:
            # The averages are written straight from their tensors: the live codec is never loaded with them.
            for tag in self.ema.averages:
                state = self.ema.averaged_state(tag, codec)
                weights = {k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")}
                save_codec(codec, self.run_dir / f"codec_{tag}.safetensors", weights=weights)
        codec.set_num_codebooks(codec.total_codebooks)
        return path

    # ---- the loop ---------------------------------------------------------------------------
    def fit(self, steps: int | None = None) -> list[dict[str, float]]:
        """Train until ``steps`` (default ``train.steps``), resuming from ``checkpoint.pt`` if present.

        ``resume=false`` starts over instead, overwriting the checkpoint. Either way the rows of
        ``metrics.jsonl`` past the starting step (a killed run's, replayed now) are dropped first, and the
        temporary files of a save killed mid-write are removed.
        """
        cfg = self.cfg
        steps = int(cfg.train.steps) if steps is None else steps
        ckpt = self.run_dir / "checkpoint.pt"
        if cfg.resume and ckpt.exists():
            hint = "delete it, or pass resume=false to start over (overwriting it)"
            self.load_state_dict(load_checkpoint(ckpt, hint=hint))
            log.info("resumed from %s at step %d", ckpt, self.step)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        remove_stale_tmp(ckpt)
        metrics_file = self.run_dir / "metrics.jsonl"
        truncate_metrics(metrics_file, self.step)
        run = self._wandb()
        bar = tqdm(total=steps, initial=self.step, desc="train-codec", dynamic_ncols=True)
        while self.step < steps:
            t0 = time.perf_counter()
            logs = self.train_step()
            logs["time/step_s"] = time.perf_counter() - t0
            logs["step"] = self.step
            self.history.append(logs)
            bar.update(1)
            bar.set_postfix(mel=f"{logs['rec/mel']:.3f}", loss=f"{logs['loss']:.3f}")
            if self.step % int(cfg.train.log_every) == 0 or self.step == steps:
                with open(metrics_file, "a") as f:
                    f.write(json.dumps(logs) + "\n")
                if run is not None:
                    run.log(logs, step=self.step)
            if self.step % int(cfg.train.save_every) == 0 or self.step == steps:
                self.save()
        bar.close()
        if run is not None:
            run.finish()
        return self.history

    def _wandb(self) -> Any:
        mode = self.cfg.train.wandb.mode
        if mode == "disabled":
            return None
        import wandb

        return wandb.init(
            project=self.cfg.train.wandb.project,
            name=str(self.cfg.run_name),
            mode=mode,
            dir=str(self.run_dir),
            config=OmegaConf.to_container(self.cfg, resolve=True),  # type: ignore[arg-type]
            resume="allow",
        )


@hydra.main(config_path=str(CONFIG_DIR), config_name="train_codec", version_base="1.3")
def _hydra_main(cfg: DictConfig) -> None:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    trainer = CodecTrainer(cfg, run_dir)
    history = trainer.fit()
    if history:
        last = history[-1]
        print(f"step {trainer.step}: " + ", ".join(f"{k}={v:.4f}" for k, v in last.items() if "/" in k))
    print(f"wrote {run_dir}/checkpoint.pt and {run_dir}/codec.safetensors")


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``e2e-voice train-codec`` (Hydra reads the overrides from ``sys.argv``)."""
    _hydra_main()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
