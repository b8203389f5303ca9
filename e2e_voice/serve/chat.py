"""``e2e-voice chat``: talk to a running server with this machine's microphone and speakers.

e2e-voice serve &            # in another terminal
e2e-voice chat --url ws://127.0.0.1:8998/api/chat
"""

from __future__ import annotations

import argparse
import asyncio
import queue
import sys

import numpy as np

from e2e_voice.constants import FRAME_SIZE, SAMPLE_RATE


async def _run(url: str, token: str | None) -> None:
    import aiohttp
    import sounddevice as sd
    import sphn

    from e2e_voice.serve import protocol
    from e2e_voice.serve.protocol import Kind

    writer, reader = sphn.OpusStreamWriter(SAMPLE_RATE), sphn.OpusStreamReader(SAMPLE_RATE)
    loop = asyncio.get_running_loop()
    outgoing: asyncio.Queue[bytes] = asyncio.Queue()
    playback: queue.Queue[np.ndarray] = queue.Queue()
    pending: np.ndarray = np.zeros(0, np.float32)

    def on_input(indata: np.ndarray, frames: int, time: object, status: object) -> None:
        data = writer.append_pcm(indata[:, 0].astype(np.float32))
        if data:
            loop.call_soon_threadsafe(outgoing.put_nowait, protocol.audio(data))

    def on_output(outdata: np.ndarray, frames: int, time: object, status: object) -> None:
        try:
            outdata[:, 0] = playback.get_nowait()
        except queue.Empty:
            outdata.fill(0)

    headers = {"Authorization": f"Bearer {token}"} if token else None
    async with aiohttp.ClientSession() as session, session.ws_connect(url, headers=headers) as ws:
        print(f"connected to {url}; speak (Ctrl-C to stop)", file=sys.stderr)
        with (
            sd.InputStream(samplerate=SAMPLE_RATE, channels=1, blocksize=FRAME_SIZE, callback=on_input),
            sd.OutputStream(samplerate=SAMPLE_RATE, channels=1, blocksize=FRAME_SIZE, callback=on_output),
        ):

            async def sender() -> None:
                while True:
                    await ws.send_bytes(await outgoing.get())

            task = asyncio.create_task(sender())
            try:
                async for msg in ws:
                    if not msg.data:
                        continue
                    kind, payload = msg.data[0], msg.data[1:]
                    if kind == Kind.AUDIO:
                        pcm = reader.append_bytes(payload)
                        if pcm is not None and len(pcm):
                            pending = np.concatenate([pending, pcm])
                            while len(pending) >= FRAME_SIZE:
                                playback.put(pending[:FRAME_SIZE])
                                pending = pending[FRAME_SIZE:]
                    elif kind == Kind.TEXT:
                        print(payload.decode("utf-8", "replace"), end="", flush=True)
                    elif kind == Kind.ERROR:
                        print(f"\nserver error: {payload.decode('utf-8', 'replace')}", file=sys.stderr)
            finally:
                task.cancel()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="e2e-voice chat", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", default="ws://127.0.0.1:8998/api/chat")
    parser.add_argument("--token", default=None, help="auth token when the server requires one")
    args = parser.parse_args(argv)
    try:
        import sounddevice as sd

        sd.query_devices(kind="input")
        sd.query_devices(kind="output")
    except Exception as exc:  # PortAudio missing, or no devices on this machine
        print(
            f"e2e-voice chat needs a microphone and speakers ({exc}); to use a recording instead run"
            " `e2e-voice converse --input user.wav --output out.wav`",
            file=sys.stderr,
        )
        return 1
    try:
        asyncio.run(_run(args.url, args.token))
    except KeyboardInterrupt:
        return 0
    except OSError as exc:
        print(f"cannot reach {args.url}: {exc}; is `e2e-voice serve` running?", file=sys.stderr)
        return 1
    return 0
