"""The LM trainer: a smoke run, exact resume, the schedule, the sampler, and 2-process data parallel."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from e2e_voice.constants import CONFIG_DIR, REPO_ROOT
from e2e_voice.lm.streams import Word, build_text_stream
from tests.lm_testing import FIXTURE_TEXT, fixture_tokenizer
from train.lm import CHECKPOINT, train, warmup_cosine
from train.lm_data import StreamSampler, load_streams, save_streams

TINY = [
    "lm.n_q=2",
    "lm.card=32",
    "lm.text_card=64",
    "lm.dim=32",
    "lm.num_layers=2",
    "lm.num_heads=4",
    "lm.ff_hidden=64",
    "lm.depformer_dim=16",
    "lm.depformer_num_layers=1",
    "lm.depformer_num_heads=2",
    "lm.depformer_ff_hidden=32",
    "lm_data.seq_len=16",
    "lm_data.smoke_conversations=0",
    "train.batch_size=2",
    "train.wandb.mode=disabled",
    "train.lr=3e-3",
    "train.warmup_steps=1",
    "train.log_every=1",
]


@pytest.fixture(scope="module")
def streams_file(tmp_path_factory) -> Path:
    """A fixture corpus: real inner-monologue text streams over random audio codes."""
    root = tmp_path_factory.mktemp("lm_corpus")
    tok = fixture_tokenizer(root, vocab_size=64)
    g = torch.Generator().manual_seed(0)
    streams = []
    for i, sentence in enumerate(FIXTURE_TEXT):
        T = 30 + 3 * i
        words = [Word(w, 0.3 + 0.35 * j, 0.6 + 0.35 * j) for j, w in enumerate(sentence.split())]
        text = build_text_stream(words, T, tok).tokens
        audio = torch.randint(0, 32, (4, T), generator=g)
        streams.append(torch.cat([text[None], audio]))
    return save_streams(root / "streams.pt", streams, {"n_q": 2, "tokenizer": str(tok.path)})


def make_cfg(out_dir: Path, streams: Path, *overrides: str):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(
            "train_lm",
            overrides=[
                *TINY,
                f"out_dir={out_dir}",
                "run_name=test",
                f"lm_data.streams={streams}",
                *overrides,
            ],
        )


@pytest.mark.slow
def test_smoke_run_learns_and_checkpoints(tmp_path, streams_file):
    final = train(
        make_cfg(tmp_path, streams_file, "train.steps=12", "train.grad_accum=2", "train.save_every=6")
    )
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["val/loss/text"] > 0 and {"val/loss/semantic", "val/loss/acoustic"} <= set(rows[-1])
    train_rows = [r for r in rows if "train/loss" in r]
    # The audio codes are random (nothing to learn below ln 32); the inner monologue is learnable.
    assert train_rows[-1]["train/loss/text"] < 0.9 * train_rows[0]["train/loss/text"]
    assert train_rows[-1]["train/loss"] < train_rows[0]["train/loss"]
    ckpt = torch.load(tmp_path / CHECKPOINT, weights_only=False)
    assert ckpt["step"] == 12 and {"model", "optimizer", "scheduler", "rng", "sampler", "config"} <= set(ckpt)
    assert final["val/loss"] == rows[-1]["val/loss"]


@pytest.mark.slow
def test_resume_equals_uninterrupted(tmp_path, streams_file):
    common = ("train.steps=6", "train.save_every=100", "train.grad_accum=2")
    train(make_cfg(tmp_path / "straight", streams_file, *common))
    train(make_cfg(tmp_path / "first", streams_file, *common, "lm_train.stop_after=3"))
    train(make_cfg(tmp_path / "second", streams_file, *common, f"lm_train.resume={tmp_path / 'first'}"))
    a = torch.load(tmp_path / "straight" / CHECKPOINT, weights_only=False)
    b = torch.load(tmp_path / "second" / CHECKPOINT, weights_only=False)
    assert torch.load(tmp_path / "first" / CHECKPOINT, weights_only=False)["step"] == 3
    assert a["step"] == b["step"] == 6 and a["sampler"] == b["sampler"]
    for key, value in a["model"].items():
        torch.testing.assert_close(b["model"][key], value, rtol=0, atol=0, msg=key)


def test_lora_run_saves_and_resumes_only_adapters(tmp_path, streams_file):
    lora = ("lm.lora.enabled=true", "+lm.lora.rank=4", "train.save_every=100")
    train(make_cfg(tmp_path / "a", streams_file, *lora, "train.steps=3", "lm_train.stop_after=2"))
    train(make_cfg(tmp_path / "b", streams_file, *lora, "train.steps=3", f"lm_train.resume={tmp_path / 'a'}"))
    ckpt = torch.load(tmp_path / "b" / CHECKPOINT, weights_only=False)
    assert ckpt["step"] == 3 and ckpt["model"] and all("lora_" in k for k in ckpt["model"])


def test_bad_resume_and_data_are_explained(tmp_path, streams_file):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        train(make_cfg(tmp_path, streams_file, f"lm_train.resume={tmp_path / 'nope'}"))
    with pytest.raises(ValueError, match="n_q"):
        train(make_cfg(tmp_path, streams_file, "lm.n_q=3"))
    with pytest.raises(FileNotFoundError, match="smoke_conversations=0"):
        train(make_cfg(tmp_path, tmp_path / "missing.pt"))
    # streams encoded from a corpus that was regenerated since: refused before any step
    manifest = tmp_path / "train.jsonl"
    manifest.write_text("{}\n")
    streams, meta = load_streams(streams_file)
    stale = save_streams(tmp_path / "stale.pt", streams, {**meta, "corpus": {str(manifest): "0" * 64}})
    with pytest.raises(ValueError, match="older version of"):
        train(make_cfg(tmp_path, stale, f"lm_data.manifests={{train:[{manifest}]}}"))


def test_train_runs_eager_on_cpu_and_restores_compilation(tmp_path, streams_file, monkeypatch):
    # moshi's lazy kernel compilation costs ~20 s per CPU process for nothing; train() turns it off
    # for the run itself (callers need not), and puts the flag back afterwards.
    import moshi.utils.compile as moshi_compile

    import train.lm as lm_trainer

    seen = []
    monkeypatch.setattr(
        lm_trainer, "_train", lambda cfg, on_gpu: seen.append((on_gpu, moshi_compile._compile_disabled))
    )
    before = moshi_compile._compile_disabled
    train(make_cfg(tmp_path, streams_file))
    assert seen == [(False, True)] and moshi_compile._compile_disabled == before


def test_warmup_cosine_schedule():
    lrs = [warmup_cosine(s, warmup=4, total=20, min_ratio=0.1) for s in range(20)]
    assert lrs[:4] == [0.25, 0.5, 0.75, 1.0]
    assert all(a >= b for a, b in itertools.pairwise(lrs[3:]))
    assert lrs[-1] == pytest.approx(0.1, abs=0.01)


def test_sampler_resumes_and_shards():
    a = StreamSampler(10, seed=3)
    seq = [a.next() for _ in range(25)]
    b = StreamSampler(10, seed=3)
    for _ in range(13):
        b.next()
    c = StreamSampler(10, seed=3)
    c.load_state_dict(b.state_dict())
    assert [c.next() for _ in range(12)] == seq[13:]
    r0, r1 = StreamSampler(10, rank=0, world=2), StreamSampler(10, rank=1, world=2)
    assert not {r0.next()[0] for _ in range(5)} & {r1.next()[0] for _ in range(5)}


@pytest.mark.slow
def test_two_process_data_parallel(tmp_path, streams_file):
    out = tmp_path / "ddp"
    cmd = [
        # accelerate 1.x: `--cpu --num_processes 2` runs ONE process; `--multi_gpu` starts torchrun,
        # and the trainer's Accelerator(cpu=True) makes it a 2-process gloo (MULTI_CPU) run.
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "train.lm",
        *TINY, "train.steps=3", f"out_dir={out}", "run_name=ddp", f"lm_data.streams={streams_file}",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NO_TORCH_COMPILE": "1"}
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 process(es)" in proc.stdout + proc.stderr, proc.stdout[-3000:]
    ckpt = torch.load(out / CHECKPOINT, weights_only=False)
    assert ckpt["step"] == 3
    # Each rank read its own shard (7 training conversations: 4 and 3), 3 steps x batch 2 = 6 items.
    assert [s["epoch"] * n + s["position"] for s, n in zip(ckpt["sampler"], (4, 3))] == [6, 6]


@pytest.mark.parametrize(
    ("experiment", "lm_name", "steps"),
    [
        pytest.param("lm_tiny_cpu", "tiny", 400, id="tiny-cpu"),
        pytest.param("lm_smol_gpu", "smol", 20000, id="smol-gpu"),
        pytest.param("lm_task_cpu", "tiny", 4000, id="task-cpu"),
        pytest.param("lm_task_gpu", "tiny", 20000, id="task-gpu"),
    ],
)
def test_recipes_compose(experiment, lm_name, steps):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train_lm", overrides=[f"+experiment={experiment}", "run_name=x"])
    assert cfg.lm.name == lm_name and cfg.train.steps == steps and cfg.lm.n_q == cfg.codec.num_codebooks == 8


@pytest.mark.slow
def test_best_checkpoint_is_kept_and_survives_resume(tmp_path, streams_file):
    """best.pt holds the weights of the lowest validation loss so far (by lm_train.best_metric), its step
    and value; a resumed run knows the best before it; the engine's loader reads it like a checkpoint."""
    common = (
        "train.steps=8",
        "train.save_every=2",
        "lm_train.val_every=2",
        "lm_train.best_metric=val/loss/text",
    )
    train(make_cfg(tmp_path / "run", streams_file, *common, "lm_train.stop_after=4"))
    first = torch.load(tmp_path / "run" / "best.pt", weights_only=False)
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    vals = [(r["step"], r["val/loss/text"]) for r in rows if "val/loss/text" in r]
    step, value = min(vals, key=lambda sv: sv[1])
    assert first["best"] == {"metric": "val/loss/text", "value": value, "step": step} == first["best"]
    assert first["step"] == step and {"model", "config", "tokenizer"} <= set(first)
    train(make_cfg(tmp_path / "run", streams_file, *common))  # resumes from step 4
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    vals = [(r["step"], r["val/loss/text"]) for r in rows if "val/loss/text" in r]
    best = torch.load(tmp_path / "run" / "best.pt", weights_only=False)["best"]
    assert best["value"] == min(v for _, v in vals) and best["step"] == min(vals, key=lambda sv: sv[1])[0]
    with pytest.raises(ValueError, match="best_metric"):
        train(make_cfg(tmp_path / "bad", streams_file, "train.steps=2", "lm_train.best_metric=val/wer"))


@pytest.mark.slow
def test_hidden_user_levels_are_not_heard(tmp_path, streams_file):
    """With lm.user_levels=1 the trainer feeds the user's second codebook as "no input": its values make
    no difference to what the model learns (two corpora differing only there train to the same weights)."""
    streams, meta = load_streams(streams_file)
    g = torch.Generator().manual_seed(1)
    other = [torch.cat([s[:4], torch.randint(0, 32, (1, s.shape[1]), generator=g)]) for s in streams]
    other_file = save_streams(tmp_path / "other.pt", other, meta)
    args = ("train.steps=3", "train.save_every=100", "lm.user_levels=1")
    train(make_cfg(tmp_path / "a", streams_file, *args))
    train(make_cfg(tmp_path / "b", other_file, *args))
    a = torch.load(tmp_path / "a" / CHECKPOINT, weights_only=False)["model"]
    b = torch.load(tmp_path / "b" / CHECKPOINT, weights_only=False)["model"]
    for key, value in a.items():
        torch.testing.assert_close(b[key], value, rtol=0, atol=0, msg=key)
    train(make_cfg(tmp_path / "c", other_file, "train.steps=3", "train.save_every=100"))  # all levels heard
    c = torch.load(tmp_path / "c" / CHECKPOINT, weights_only=False)["model"]
    assert any(not torch.equal(c[k], v) for k, v in a.items())
