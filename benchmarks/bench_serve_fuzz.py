"""The long protocol fuzz of ``e2e-voice serve`` (issue #45): the short one is ``tests/test_serve_fuzz.py``.

Starts the real websocket server (``ChatServer``) on 127.0.0.1 and throws ``e2e_voice.serve.fuzz`` at it:
random and malformed messages of every kind, oversized ones, audio before the handshake, wrong tokens,
bursts over several connections, silent connections (idle timeout) and raw broken websocket frames,
with a good client talking beside it the whole time. Two systems: the loopback echo (most of the
connections) and the offline cascade (shared models, watermark off; its worker threads are what leaked).
Counts per system: connections, messages, refusals and how many were explained (error message or HTTP
error body), unhandled exceptions (error-level log records and asyncio's handler), threads and RSS before
and after, and the share of the good client's frames answered. Writes ``runs/bench/bench_serve_fuzz.json`` and
``bench_serve_fuzz.md``, with the machine and how busy its CPU was just before (``machine.py``).

    python benchmarks/bench_serve_fuzz.py [--connections 1500] [--cascade-connections 150]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
from aiohttp import web
from hydra import compose, initialize_config_dir

from e2e_voice.constants import CONFIG_DIR, FRAME_SIZE, REPO_ROOT, SAMPLE_RATE
from e2e_voice.serve.client import chat
from e2e_voice.serve.fuzz import FuzzStats, rss_mb, run_broken_frames, run_fuzz, settle_threads
from e2e_voice.serve.loopback import LoopbackSystem
from e2e_voice.serve.server import ACCESS_LOG_CLASS, ChatServer, ServeSettings
from eval.machine import context_line, machine_context

MAX_BYTES = 4096


class _Problems(logging.Handler):
    """Collects error-level records (aiohttp's 'Error handling request', our 'conversation failed')."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(f"{record.name}: {record.getMessage()[:200]}")


def _settle(baseline: int) -> int:
    return settle_threads(baseline, timeout=20.0, poll=0.1)


async def _good_client(url: str, done: asyncio.Event) -> tuple[int, int, int]:
    """1.5 s conversations until ``done``: (frames sent, frames answered, conversations with errors)."""
    sent = answered = failed = 0
    t = np.arange(int(1.5 * SAMPLE_RATE)) / SAMPLE_RATE
    x = (0.3 * np.sin(2 * np.pi * 330 * t)).astype(np.float32)
    while not done.is_set() or not sent:
        result = await chat(url + "?token=good", x, realtime=True, timeout=120)
        frames = len(x) // FRAME_SIZE
        sent += frames
        answered += min(frames, (len(result.audio) + 2 * FRAME_SIZE) // FRAME_SIZE)
        failed += bool(result.errors)
    return sent, answered, failed


async def _phase(factory: Any, connections: int, seed: int, concurrency: int) -> dict[str, Any]:
    settings = ServeSettings(
        tokens=("good", "fuzz"),
        max_conversations=16,
        max_message_bytes=MAX_BYTES,
        messages_per_second=500,
        burst=1000,
        connections_per_minute=0,
        auth_failures_per_minute=100_000,
        idle_timeout_seconds=1.0,
        static_dir=None,
    )
    loop_errors: list[str] = []
    asyncio.get_running_loop().set_exception_handler(lambda _, ctx: loop_errors.append(str(ctx)[:200]))
    server = ChatServer(factory, settings)
    runner = web.AppRunner(server.app(), shutdown_timeout=5.0, access_log_class=ACCESS_LOG_CLASS)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    url = f"ws://127.0.0.1:{port}/api/chat"
    t0 = time.perf_counter()
    try:
        done = asyncio.Event()
        good = asyncio.create_task(_good_client(url, done))
        stats = await run_fuzz(
            url,
            connections=connections,
            token="fuzz",
            max_bytes=MAX_BYTES,
            seed=seed,
            concurrency=concurrency,
            idle_seconds=settings.idle_timeout_seconds,
        )
        stats.merge(await run_broken_frames("127.0.0.1", port, "fuzz"))
        done.set()
        sent, answered, failed = await good
        async with aiohttp.ClientSession() as s:
            health = await (await s.get(f"http://127.0.0.1:{port}/health")).json()
    finally:
        await runner.cleanup()
    return {
        "stats": stats,
        "wall_s": time.perf_counter() - t0,
        "server_up": health.get("status") == "ok",
        "good_frames_sent": sent,
        "good_frames_answered": answered,
        "good_conversations_with_errors": failed,
        "loop_errors": loop_errors,
        "system_errors": server.metrics.errors.get("system_error", 0),
    }


def measure(name: str, factory: Any, connections: int, seed: int, concurrency: int) -> dict[str, Any]:
    problems = _Problems()
    logging.getLogger().addHandler(problems)
    threads0, rss0 = threading.active_count(), rss_mb()
    try:
        out = asyncio.run(_phase(factory, connections, seed, concurrency))
    finally:
        logging.getLogger().removeHandler(problems)
    threads1 = _settle(threads0)
    stats: FuzzStats = out.pop("stats")
    return {
        "system": name,
        "connections": stats.connections,
        "messages": stats.messages,
        "refused": stats.refused,
        "explained": stats.explained,
        "unexplained": stats.unexplained[:20],
        "statuses": dict(stats.statuses),
        "reasons": dict(stats.reasons.most_common()),
        "unhandled_exceptions": len(problems.records) + len(out["loop_errors"]),
        "problems": problems.records[:20],
        "threads_before": threads0,
        "threads_after": threads1,
        "rss_mb_before": round(rss0, 1),
        "rss_mb_after": round(rss_mb(), 1),
        **out,
    }


def _cascade_factory(share: bool = True) -> Any:
    from e2e_voice.serve.app import system_factory

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("serve", overrides=["system=cascade", f"system.share_models={str(share).lower()}"])
    return system_factory(cfg.system, watermark=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--connections", type=int, default=1500, help="fuzz connections to the loopback system"
    )
    parser.add_argument("--cascade-connections", type=int, default=150, help="to the cascade (0: skip)")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--out", default=str(REPO_ROOT / "runs" / "bench"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    machine = machine_context()
    measure("warm-up", lambda: LoopbackSystem(delay_frames=2), 20, 0, args.concurrency)
    runs = [
        measure("loopback", lambda: LoopbackSystem(delay_frames=2), args.connections, 1, args.concurrency)
    ]
    if args.cascade_connections:
        factory = _cascade_factory()
        runs.append(measure("cascade", factory, args.cascade_connections, 2, min(4, args.concurrency)))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_serve_fuzz.json").write_text(json.dumps({"machine": machine, "runs": runs}, indent=2))
    lines = [
        "# Protocol fuzz: `e2e-voice serve` (random, malformed, oversized, early, bursty, wrong-token, idle)",
        "",
        context_line(machine),
        "",
        "| system | connections | messages | refused | explained | server up | unhandled exc. "
        "| threads before/after | RSS MB before/after | good client answered | wall (s) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in runs:
        share = 100 * r["good_frames_answered"] / max(1, r["good_frames_sent"])
        lines.append(
            f"| {r['system']} | {r['connections']} | {r['messages']} | {r['refused']} | {r['explained']} "
            f"| {'yes' if r['server_up'] else 'NO'} | {r['unhandled_exceptions']} "
            f"| {r['threads_before']}/{r['threads_after']} | {r['rss_mb_before']}/{r['rss_mb_after']} "
            f"| {share:.1f} % of {r['good_frames_sent']} frames | {r['wall_s']:.0f} |"
        )
    total = sum(r["connections"] for r in runs), sum(r["messages"] for r in runs)
    lines += ["", f"Total: {total[0]} connections, {total[1]} messages."]
    for r in runs:
        lines.append(
            f"Refusal reasons ({r['system']}): " + ", ".join(f"{k} {v}" for k, v in r["reasons"].items())
        )
    (out / "bench_serve_fuzz.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
