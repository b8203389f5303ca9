"""Connection setup time of ``e2e-voice serve system=cascade``: models loaded per connection vs shared.

Starts the real websocket server (``ChatServer``) on loopback with the offline cascade (Whisper base,
SmolLM2, Kokoro, Silero VAD; watermark on, as served), once with ``system.share_models=false`` (every
connection loads its own models, the behaviour before issue #6) and once with ``true`` (the default:
the first load is shared). For each, opens ``--connections`` conversations one after the other and
times websocket connect -> the server's handshake, which is sent once the conversation's system is
ready. Both settings run in the same process, one after the other; report the ratio. Writes
``runs/bench/serve_setup.json`` and ``serve_setup.md``, with the machine and how busy its CPU was just
before (``machine.py``).

    python benchmarks/bench_serve_setup.py [--connections 3] [--overrides cascade/tts=piper ...]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from hydra import compose, initialize_config_dir

from e2e_voice.constants import CONFIG_DIR, REPO_ROOT
from e2e_voice.serve.app import system_factory
from e2e_voice.serve.server import ChatServer, ServeSettings
from eval.machine import context_line, machine_context


async def _handshake_times(factory: Any, connections: int) -> list[float]:
    server = ChatServer(factory, ServeSettings(static_dir=None))
    runner = web.AppRunner(server.app(), shutdown_timeout=5.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    times = []
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(connections):
                t = time.perf_counter()
                async with session.ws_connect(f"ws://127.0.0.1:{port}/api/chat") as ws:
                    msg = await ws.receive(timeout=300)
                    times.append(time.perf_counter() - t)
                    assert msg.type == aiohttp.WSMsgType.BINARY and msg.data[:1] == b"\x00", msg
    finally:
        await runner.cleanup()
    return times


def measure(share: bool, connections: int, overrides: list[str]) -> dict[str, Any]:
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(
            "serve", overrides=["system=cascade", f"system.share_models={str(share).lower()}", *overrides]
        )
    t = time.perf_counter()
    factory = system_factory(cfg.system, cfg.watermark.enabled, cfg.watermark.model_path)
    startup = time.perf_counter() - t
    times = asyncio.run(_handshake_times(factory, connections))
    return {"share_models": share, "server_startup_s": startup, "connection_setup_s": times}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=3)
    parser.add_argument("--overrides", nargs="*", default=[], help="Hydra overrides of the serve config")
    parser.add_argument("--out", default=str(REPO_ROOT / "runs" / "bench"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    machine = machine_context()
    runs = [measure(share, args.connections, args.overrides) for share in (False, True)]
    before, after = (sum(r["connection_setup_s"]) / len(r["connection_setup_s"]) for r in runs)
    result = {
        "machine": machine,
        "overrides": args.overrides,
        "runs": runs,
        "mean_setup_s": {"per_connection_models": before, "shared_models": after},
        "speedup": before / max(after, 1e-9),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "serve_setup.json").write_text(json.dumps(result, indent=2))
    lines = [
        "# Connection setup: `e2e-voice serve system=cascade` (connect -> handshake)",
        "",
        context_line(machine),
        "",
        f"Offline cascade defaults {args.overrides or ''}, watermark on.",
        "",
        "| models | server start (s) | per connection (s) | mean (s) |",
        "| --- | --- | --- | --- |",
    ]
    for r in runs:
        per = ", ".join(f"{x:.2f}" for x in r["connection_setup_s"])
        mean = sum(r["connection_setup_s"]) / len(r["connection_setup_s"])
        name = "shared (share_models=true)" if r["share_models"] else "per connection (share_models=false)"
        lines.append(f"| {name} | {r['server_startup_s']:.1f} | {per} | {mean:.3f} |")
    lines += ["", f"Setup is {result['speedup']:.0f}x faster with shared models (same run)."]
    (out / "serve_setup.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
