"""``e2e-voice demo``: a real, offline, end-to-end pass through the bundled models.

SmolLM2 answers a question, Kokoro speaks the answer, the speech goes through two codecs (Opus at
24 kHz as a browser would send it, and a Mimi codec from the ``codec`` config group), and Whisper base
transcribes each version so the word error rate says what each step cost. Then (``demo.task_questions``)
the e2e model and the cascade answer a few held-out spoken task questions side by side, on the real clock
(``eval/demo_task.py``). Every number printed is measured in this run; the results land in
``runs/demo/<time>/``.
"""

from __future__ import annotations

import gc
import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from e2e_voice.audio.io import save_audio
from e2e_voice.audio.opus import opus_roundtrip
from e2e_voice.constants import CONFIG_DIR, FRAME_SIZE, SAMPLE_RATE
from e2e_voice.stt.whisper import word_error_rate


@dataclass
class Row:
    step: str
    seconds: float
    detail: str
    wer: float | None = None


def mimi_roundtrip(codec: Any, audio: np.ndarray) -> tuple[np.ndarray, tuple[int, ...], float]:
    """Encode/decode ``[T]`` audio frame by frame under a streaming context.

    Returns:
        (reconstruction [T], codes shape [B, K, T'], mean milliseconds per 80 ms frame)
    """
    padded = np.pad(audio, (0, (-len(audio)) % FRAME_SIZE))
    x = torch.from_numpy(padded)[None, None]  # [B=1, C=1, T]
    frames, codes = [], []
    t0 = time.perf_counter()
    with torch.no_grad(), codec.streaming(1):
        for i in range(0, x.shape[-1], FRAME_SIZE):
            c = codec.encode(x[..., i : i + FRAME_SIZE])  # [1, K, 1]
            codes.append(c)
            frames.append(codec.decode(c))  # [1, 1, FRAME_SIZE]
    per_frame = 1000 * (time.perf_counter() - t0) / len(frames)
    all_codes = torch.cat(codes, dim=-1)
    recon = torch.cat(frames, dim=-1)[0, 0, : len(audio)].numpy()
    return recon, tuple(all_codes.shape), per_frame


def run(cfg: DictConfig, out_dir: Path) -> dict[str, Any]:
    """Run the demo with a composed config, writing audio and ``summary.json`` to ``out_dir``.

    With ``demo.task_questions > 0`` it ends with the held-out task questions (``eval/demo_task.py``),
    run once the pipeline's models are gone: a Whisper left alive would slow the e2e model (``WhisperSTT``).
    """
    logging.getLogger("faster_whisper").setLevel(logging.WARNING)
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    rows: list[Row] = []
    summary = _pipeline(cfg, out_dir, rows)
    gc.collect()  # the LLM, Kokoro, Whisper and codec of the pipeline were locals of _pipeline
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    _print(summary, rows, out_dir)
    if int(cfg.demo.get("task_questions") or 0) > 0:
        from eval.demo_task import run_task

        summary["task"] = run_task(cfg, out_dir)
        (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def _pipeline(cfg: DictConfig, out_dir: Path, rows: list[Row]) -> dict[str, Any]:
    """LLM -> TTS -> codecs -> Whisper, appending a :class:`Row` per step; returns the summary."""
    question = cfg.demo.question

    t = time.perf_counter()
    llm = instantiate(cfg.cascade.llm)
    load_llm = time.perf_counter() - t
    t = time.perf_counter()
    answer = llm.reply(question, seed=cfg.seed)
    rows.append(Row("llm answer", time.perf_counter() - t, f"{cfg.cascade.llm.model} (load {load_llm:.1f}s)"))
    if not answer:
        raise RuntimeError("the LLM returned an empty answer; try another demo.question")

    tts = instantiate(cfg.cascade.tts)
    t = time.perf_counter()
    speech = tts.synthesize(answer)
    dt = time.perf_counter() - t
    seconds = len(speech) / SAMPLE_RATE
    rows.append(
        Row("tts", dt, f"Kokoro {cfg.cascade.tts.voice}: {seconds:.2f}s of audio, RTF {dt / seconds:.2f}")
    )
    save_audio(out_dir / "answer.wav", speech)

    stt = instantiate(cfg.cascade.stt)
    t = time.perf_counter()
    heard = stt.transcribe(speech, SAMPLE_RATE)
    rows.append(Row("whisper (original)", time.perf_counter() - t, heard, word_error_rate(answer, heard)))

    t = time.perf_counter()
    opus = opus_roundtrip(speech)
    dt = time.perf_counter() - t
    save_audio(out_dir / "answer_opus.wav", opus)
    heard_opus = stt.transcribe(opus, SAMPLE_RATE)
    rows.append(Row("opus round-trip", dt, heard_opus, word_error_rate(answer, heard_opus)))

    codec = instantiate(cfg.codec, _convert_="all")
    recon, code_shape, ms = mimi_roundtrip(codec, speech)
    save_audio(out_dir / "answer_mimi.wav", recon)
    trained = cfg.codec.get("checkpoint") is not None
    if trained:
        heard_mimi = stt.transcribe(recon, SAMPLE_RATE)
        rows.append(
            Row(
                "mimi round-trip", ms * code_shape[-1] / 1000, heard_mimi, word_error_rate(answer, heard_mimi)
            )
        )
    else:
        rows.append(
            Row(
                "mimi round-trip",
                ms * code_shape[-1] / 1000,
                "random weights: output is noise until a trained checkpoint is set (codec.checkpoint)",
            )
        )

    summary = {
        "question": question,
        "answer": answer,
        "audio_seconds": seconds,
        "audio_shape_BCT": [1, 1, len(speech)],
        "mimi_codes_shape_BKT": list(code_shape),
        "mimi_ms_per_80ms_frame": ms,
        "mimi_trained": trained,
        "steps": [asdict(r) for r in rows],
        "config": OmegaConf.to_container(cfg, resolve=True),
    }
    return summary


def _print(summary: dict[str, Any], rows: list[Row], out_dir: Path) -> None:
    print(f"\nQ: {summary['question']}\nA: {summary['answer']}\n")
    print(
        f"audio [B, C, T] = {summary['audio_shape_BCT']}  ->  mimi codes [B, K, T'] = "
        f"{summary['mimi_codes_shape_BKT']}  ({summary['mimi_ms_per_80ms_frame']:.1f} ms per 80 ms frame)\n"
    )
    print(f"{'step':<20} {'time':>7}  {'WER':>6}  detail")
    for r in rows:
        wer = f"{100 * r.wer:5.1f}%" if r.wer is not None else "     -"
        detail = r.detail if len(r.detail) <= 90 else r.detail[:87] + "..."
        print(f"{r.step:<20} {r.seconds:6.2f}s  {wer}  {detail}")
    print(f"\nwrote {out_dir}/summary.json and the wav files beside it")


@hydra.main(config_path=str(CONFIG_DIR), config_name="demo", version_base="1.3")
def _hydra_main(cfg: DictConfig) -> None:
    run(cfg, Path(HydraConfig.get().runtime.output_dir))


def main(argv: list[str] | None = None) -> int:
    """Entry point used by ``e2e-voice demo`` (overrides are read from ``sys.argv``)."""
    _hydra_main()
    return 0
