"""Rank codec checkpoints on one evaluation set, with paired bootstrap intervals against a baseline.

    python -m eval.codec_rank --set data/generated/codec_eval --baseline v5 \\
        --checkpoint v5=checkpoints/codec_cpu/codec.safetensors 'runs/train_codec/*/codec.safetensors'

A checkpoint is ``NAME=PATH`` or a path/glob (named after its folder for ``codec.safetensors``, else
after the file). A name ending in ``@N`` decodes from the first ``N`` RVQ levels only (``v7@4=PATH``: the
same file at half the bitrate), so one file can be ranked at several bitrates. Each one is evaluated
by :func:`eval.codec.evaluate_clips` (its ``codec_metrics.json`` and ``.md`` land in ``OUT/NAME/``). The
judge's transcript of each original clip is computed once and shared, also with later rankings and
probes through a judge cache (``--judge-cache``, default ``runs/judge_cache/transcripts.json``, keyed by
the clip's samples and the judge's class and settings), and a checkpoint whose results are
already in ``OUT/NAME/`` for the same file (size and mtime), level count and set is not evaluated again:
an interrupted ranking resumes, and adding a checkpoint costs only its own evaluation.

Writes ``OUT/rank.md``, ``rank.json`` and ``rank.png``: per group (and ``all``), the pooled WER of the
reconstruction and its missed-word rate (reference words not heard in order, so inserted words do not
count: Whisper's hallucinations on garbled audio dominate the WER of hard groups), each with a 95 %
bootstrap interval over clips and its difference to the baseline with a *paired* interval (the same
resampled clips for both). Rows are sorted by WER, or by missed words with ``--sort-by missed``. Results
written before missed-word counts existed are rescored from their stored transcripts. A difference whose
interval lies below 0 is fewer word errors than the baseline beyond clip-sampling noise; it says nothing
about seed-to-seed noise of the training run, which only more seeds measure. The real-time factors in the
per-checkpoint files are timed next to a live judge after the first checkpoint (see ``eval.codec``); use
``eval.codec`` alone or ``make bench`` for speed.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import glob
import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from eval.codec import (
    Clip,
    add_judge_argument,
    evaluate_clips,
    group_summary,
    judge_factory,
    load_eval_codec,
    missed_words,
    rescore,
    set_clips,
    turn_clips,
    word_errors,
)
from eval.machine import machine_context
from eval.metrics import bootstrap_ci

log = logging.getLogger(__name__)


def judge_identity(factory: Any) -> str:
    """Name what decides a judge's transcripts: its class and the settings it is built with.

    For a dataclass (``WhisperSTT``) every init field's default goes in, overridden by the keywords of a
    ``functools.partial`` around it, so changing the judge's model, path, compute type, beam or language
    changes the name and a cache keyed by it never serves another judge's transcripts.

    Args:
        factory: a class, or a ``functools.partial`` of one, that builds the judge.
    """
    keywords: dict[str, Any] = {}
    while isinstance(factory, functools.partial):
        keywords = {**factory.keywords, **keywords}
        factory = factory.func
    settings: dict[str, Any] = {}
    if dataclasses.is_dataclass(factory):
        settings = {
            f.name: f.default
            for f in dataclasses.fields(factory)
            if f.init and f.default is not dataclasses.MISSING
        }
    settings.update(keywords)
    name = getattr(factory, "__qualname__", type(factory).__qualname__)
    return name + "(" + ",".join(f"{k}={v!r}" for k, v in sorted(settings.items())) + ")"


class MemoJudge:
    """A judge that transcribes each distinct clip once (keyed by its samples), built on first use.

    With ``cache``, the transcripts also outlive the process: they are read from that JSON file at start
    and written back by :meth:`save`, so rankings into other output folders do not transcribe the same
    original clips again (~2 min for the 120 clips of the evaluation set). The key is the clip's samples
    and rate plus ``judge_name`` (by default :func:`judge_identity` of ``factory``), so a judge with another
    model or settings never reuses them. An unreadable cache file is
    reported and replaced, never trusted.

    Args:
        factory: builds the real judge (an object with ``transcribe(audio, sr) -> str``).
        cache: JSON file of earlier transcripts, or None to keep them in memory only.
        judge_name: names the judge in the keys (another judge, another key); None derives it from
            ``factory`` with :func:`judge_identity`.
    """

    def __init__(self, factory: Any, cache: Path | None = None, judge_name: str | None = None) -> None:
        self._factory = factory
        self._judge: Any = None
        self.cache = cache
        self.judge_name = judge_identity(factory) if judge_name is None else judge_name
        self.memo: dict[str, str] = {}
        self.calls = 0  # real transcriptions (memo misses)
        if cache is not None and cache.is_file():
            try:
                loaded = json.loads(cache.read_text())
                if not isinstance(loaded, dict) or not all(isinstance(v, str) for v in loaded.values()):
                    raise ValueError("not a JSON object of transcripts")
                self.memo = loaded
            except ValueError as err:  # JSONDecodeError is a ValueError
                log.warning("judge cache %s is unreadable (%s): starting a new one", cache, err)

    def transcribe(self, audio: np.ndarray, sample_rate: int) -> str:
        data = np.ascontiguousarray(audio, dtype=np.float32).tobytes()
        key = f"{self.judge_name}:{hashlib.sha1(data).hexdigest()}@{sample_rate}"
        if key not in self.memo:
            if self._judge is None:
                self._judge = self._factory()
            self.memo[key] = self._judge.transcribe(audio, sample_rate)
            self.calls += 1
        return self.memo[key]

    def save(self) -> None:
        """Write the transcripts to ``cache`` (atomically: a killed write leaves the old file)."""
        if self.cache is None:
            return
        self.cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.cache.with_suffix(self.cache.suffix + ".tmp")
        tmp.write_text(json.dumps(self.memo))
        tmp.replace(self.cache)


JUDGE_CACHE = "runs/judge_cache/transcripts.json"  # one file for every judge: the keys name the judge


def add_judge_cache_argument(parser: argparse.ArgumentParser) -> None:
    """``--judge-cache``, shared by this module's and ``eval.codec_probe``'s command lines."""
    parser.add_argument(
        "--judge-cache",
        default=JUDGE_CACHE,
        help=f"the judge's transcripts, shared by rankings and probes ('none': off; default {JUDGE_CACHE})",
    )


def judge_cache(arg: str) -> Path | None:
    """``--judge-cache`` as a path, or None for ``none``."""
    return None if arg.strip().lower() in ("", "none") else Path(arg)


def parse_checkpoints(specs: list[str]) -> dict[str, Path]:
    """``NAME=PATH`` or paths/globs to ``{name: path}``, in the order given.

    Raises:
        FileNotFoundError: a spec matches no file.
        ValueError: two checkpoints get the same name.
    """
    out: dict[str, Path] = {}
    for spec in specs:
        name, _, path = spec.partition("=") if "=" in spec else ("", "", spec)
        paths = sorted(Path(p) for p in glob.glob(path)) if any(c in path for c in "*?[") else [Path(path)]
        paths = [p for p in paths if p.is_file()]
        if not paths:
            raise FileNotFoundError(f"checkpoint {spec!r} matches no file")
        for p in paths:
            key = name or (p.parent.name if p.name == "codec.safetensors" else p.stem)
            name_levels(key)  # a malformed @N fails here, before any evaluation
            if key in out and out[key] != p:
                raise ValueError(f"two checkpoints are named {key!r} ({out[key]}, {p}); name them NAME=PATH")
            out[key] = p
    return out


def name_levels(name: str) -> int | None:
    """The RVQ level count a checkpoint name asks for (``v7@4`` -> 4), or None for all of them.

    Raises:
        ValueError: the part after ``@`` is not a positive whole number.
    """
    if "@" not in name:
        return None
    levels = name.rpartition("@")[2]
    if not levels.isdigit() or int(levels) < 1:
        raise ValueError(f"checkpoint name {name!r}: after @ give how many RVQ levels to decode, e.g. v7@4")
    return int(levels)


def _source(path: Path, set_name: str, levels: int | None = None) -> dict[str, Any]:
    st = path.stat()
    source: dict[str, Any] = {
        "checkpoint": str(path),
        "size": st.st_size,
        "mtime": st.st_mtime,
        "set": set_name,
    }
    if levels is not None:  # absent for all levels, so results written before levels existed stay valid
        source["num_codebooks"] = levels
    return source


def evaluate_all(
    checkpoints: dict[str, Path], clips: list[Clip], set_name: str, out: Path, judge: Any
) -> dict[str, dict[str, Any]]:
    """Each checkpoint's ``evaluate_clips`` summary, reusing results already in ``out/NAME``."""
    results = {}
    for name, path in checkpoints.items():
        folder = out / name
        done = folder / "codec_metrics.json"
        levels = name_levels(name)
        source = _source(path, set_name, levels)
        if done.is_file():
            summary = json.loads(done.read_text())
            if summary.get("source") == source:
                print(f"{name}: reusing {done}")
                if rescore(summary["per_clip"], clips):  # written before missed-word counts existed
                    rows = summary["per_clip"]
                    groups = sorted({r["group"] for r in rows})
                    summary["groups"] = {
                        g: group_summary([r for r in rows if r["group"] == g]) for g in groups
                    }
                    done.write_text(json.dumps(summary, indent=2))
                results[name] = summary
                continue
        print(f"{name}: evaluating {path}" + (f" from its first {levels} RVQ levels" if levels else ""))
        codec = load_eval_codec(str(path), num_codebooks=levels)
        # Each checkpoint's real-time factors get their own context: a job started mid-ranking shows.
        summary = evaluate_clips(codec, clips, folder, judge, plots=1, machine=machine_context())
        summary["source"] = source
        done.write_text(json.dumps(summary, indent=2))  # written last: a killed run is redone
        results[name] = summary
    return results


def _measure(
    rows: list[dict[str, Any]], base_rows: list[dict[str, Any]] | None, metric: str, seed: int
) -> tuple[list[float] | None, list[float] | None]:
    """Pooled ``metric`` (``wer`` or ``missed``) of the reconstruction with its interval, and the paired
    difference to the baseline's rows (None without a baseline or when the two cannot be paired)."""
    count = {
        "wer": lambda r: word_errors(r, "wer_reconstruction"),
        "missed": lambda r: missed_words(r, "reconstruction"),
    }[metric]
    errors, words = count(rows)
    if not words.size:
        return None, None
    value = list(bootstrap_ci(errors, words, seed=seed))
    if base_rows is None:
        return value, None
    base_errors, base_words = count(base_rows)
    if base_words.shape != words.shape:
        return value, None
    return value, list(bootstrap_ci(errors, words, base_errors, seed=seed))


SORT_KEYS = ("wer", "missed")


def rank(
    results: dict[str, dict[str, Any]], baseline: str | None, seed: int = 0, sort_by: str = "wer"
) -> dict[str, Any]:
    """Per group (and ``all``): each checkpoint's pooled reconstruction WER and missed-word rate, each with
    its interval and its paired difference to ``baseline``, and mean mel distance and STOI.

    Args:
        sort_by: ``wer`` or ``missed``, the pooled rate each group's rows are sorted by (lowest first).
            Missed words are the steadier order where the judge inserts many words (garbled voices: two
            near-identical codecs' WERs there were seen 30 points apart, their missed words a few).

    Raises:
        ValueError: the baseline is not among the results, the checkpoints saw different clips, or
            ``sort_by`` is not one of :data:`SORT_KEYS`.
    """
    if sort_by not in SORT_KEYS:
        raise ValueError(f"sort_by {sort_by!r}: give one of {', '.join(SORT_KEYS)}")
    if baseline is not None and baseline not in results:
        raise ValueError(f"baseline {baseline!r} is not one of the checkpoints {sorted(results)}")
    clip_sets = {name: [r["file"] for r in s["per_clip"]] for name, s in results.items()}
    first = next(iter(clip_sets.values()))
    if any(files != first for files in clip_sets.values()):
        raise ValueError("the checkpoints were evaluated on different clips; rank them on one set")
    groups = [*sorted({r["group"] for s in results.values() for r in s["per_clip"]}), "all"]
    table: dict[str, Any] = {}
    for group in groups:
        rows = []
        for name, s in results.items():
            clips = [r for r in s["per_clip"] if group in ("all", r["group"])]
            base = None
            if baseline is not None:
                base = [r for r in results[baseline]["per_clip"] if group in ("all", r["group"])]
            wer, delta = _measure(clips, base, "wer", seed)
            if wer is None:
                continue
            row: dict[str, Any] = {"name": name, "wer": wer}
            if delta is not None:
                row["delta"] = delta
            missed, missed_delta = _measure(clips, base, "missed", seed)
            row["missed"], row["missed_delta"] = missed, missed_delta
            for key in ("mel_distance", "stoi"):
                vals = [r[key] for r in clips if r[key] is not None]
                row[key] = float(np.mean(vals)) if vals else None
            rows.append(row)
        # A row without missed-word counts (cannot happen after rescoring, but never crash on it) sorts last.
        table[group] = sorted(rows, key=lambda r: r[sort_by][0] if r.get(sort_by) else float("inf"))
    return {"baseline": baseline, "sort_by": sort_by, "groups": table}


def to_markdown(ranking: dict[str, Any], set_name: str) -> str:
    """The ranking as one markdown table per group."""
    base = ranking["baseline"]
    lines = [f"# Codec ranking on {set_name}", ""]
    lines.append(
        "Pooled WER of the reconstruction (Whisper base) and its missed-word rate (reference words not"
        " heard in order, over reference words: hallucinated extra words do not count), with"
        " 95 % bootstrap intervals over clips"
        + (f"; Δ is paired against `{base}` (below 0 = fewer errors)." if base else ".")
        + (" Rows are sorted by missed words." if ranking.get("sort_by") == "missed" else "")
    )
    for group, rows in ranking["groups"].items():
        lines += [
            "",
            f"## {group}",
            "",
            "| checkpoint | WER recon [95 % CI] | Δ WER [95 % CI] | missed [95 % CI] | Δ missed [95 % CI]"
            " | mel | STOI |",
        ]
        lines.append("|---|---|---|---|---|---|---|")
        for r in rows:

            def delta(d: list[float] | None, name: str = r["name"]) -> str:
                if d is None or name == base:
                    return "-"
                return f"{100 * d[0]:+.1f} [{100 * d[1]:+.1f}, {100 * d[2]:+.1f}]"

            def rate(v: list[float] | None) -> str:
                return "-" if v is None else f"{100 * v[0]:.1f}% [{100 * v[1]:.1f}, {100 * v[2]:.1f}]"

            mel = "-" if r["mel_distance"] is None else f"{r['mel_distance']:.3f}"
            stoi = "-" if r["stoi"] is None else f"{r['stoi']:.3f}"
            name = f"**{r['name']}**" if r["name"] == base else r["name"]
            cells = [rate(r["wer"]), delta(r.get("delta"))]
            cells += [rate(r.get("missed")), delta(r.get("missed_delta"))]
            lines.append(f"| {name} | " + " | ".join(cells) + f" | {mel} | {stoi} |")
    return "\n".join(lines) + "\n"


def plot(ranking: dict[str, Any], path: Path) -> None:
    """One panel per group and metric (WER above, missed-word rate below): each checkpoint's value with its
    interval, in the ``all`` group's order (by WER, or by missed words when ranked so)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = list(ranking["groups"])
    order = [r["name"] for r in ranking["groups"]["all"]][::-1]
    metrics = [("wer", "WER of reconstruction, %"), ("missed", "missed words, %")]
    fig, axes = plt.subplots(
        len(metrics),
        len(groups),
        figsize=(3.2 * len(groups), 2 * (0.35 * len(order) + 1.2)),
        sharey=True,
        squeeze=False,
    )
    for row_axes, (metric, label) in zip(axes, metrics, strict=True):
        for ax, group in zip(row_axes, groups, strict=True):
            by_name = {r["name"]: r for r in ranking["groups"][group]}
            for y, name in enumerate(order):
                value = by_name.get(name, {}).get(metric)
                if value is None:
                    continue
                w = 100 * np.asarray(value)
                color = "tab:red" if name == ranking["baseline"] else "tab:blue"
                ax.errorbar(w[0], y, xerr=[[w[0] - w[1]], [w[2] - w[0]]], fmt="o", color=color, capsize=3)
            ax.set_title(group)
            ax.set_xlabel(label)
            ax.grid(axis="x", alpha=0.3)
        row_axes[0].set_yticks(range(len(order)), order)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval.codec_rank", description=__doc__.splitlines()[0])
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--set", help="an evaluation set folder (python -m eval.codec_set)")
    what.add_argument("--turns", help="a synth-data manifest: every turn of its conversations")
    parser.add_argument(
        "--checkpoint",
        nargs="+",
        required=True,
        help="NAME=PATH (NAME@N=PATH: first N RVQ levels) or paths/globs",
    )
    parser.add_argument("--baseline", default=None, help="the checkpoint name the others are compared with")
    parser.add_argument(
        "--sort-by",
        choices=SORT_KEYS,
        default="wer",
        help="order rows by pooled WER or by missed words (steadier on voices the judge hallucinates on)",
    )
    parser.add_argument("--out", default="runs/codec_rank")
    parser.add_argument("--threads", type=int, default=2)
    add_judge_argument(parser)
    add_judge_cache_argument(parser)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    logging.getLogger("faster_whisper").setLevel(logging.WARNING)
    checkpoints = parse_checkpoints(args.checkpoint)
    if args.baseline is not None and args.baseline not in checkpoints:
        parser.error(f"--baseline {args.baseline!r} is not one of the checkpoints {sorted(checkpoints)}")
    set_name = str(args.set or args.turns)
    clips = set_clips(args.set) if args.set else turn_clips(args.turns)
    judge = MemoJudge(judge_factory(args.judge_compute_type), cache=judge_cache(args.judge_cache))
    out = Path(args.out)
    try:
        results = evaluate_all(checkpoints, clips, set_name, out, judge)
    finally:
        judge.save()  # what was transcribed before a failure is kept too
    ranking = rank(results, args.baseline, sort_by=args.sort_by)
    (out / "rank.json").write_text(json.dumps(ranking, indent=2))
    text = to_markdown(ranking, set_name)
    (out / "rank.md").write_text(text)
    plot(ranking, out / "rank.png")
    print(text)
    print(f"wrote {out}/rank.md, rank.json and rank.png ({judge.calls} judge transcriptions)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
