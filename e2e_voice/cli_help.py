"""What ``e2e-voice COMMAND --help`` says first: one paragraph on what the command is for, two examples.

The command's own help (argparse's options, or Hydra's config groups and keys) follows it. Kept apart
from ``cli.py`` so the dispatcher stays short; ``tests/test_cli.py`` checks that every command has one.
"""

from __future__ import annotations

import textwrap

# command -> (what it is for, two example command lines)
HELP: dict[str, tuple[str, tuple[str, str]]] = {
    "models": (
        "Install, list, verify and locate the offline model bundle (Whisper, SmolLM2, Kokoro, Piper, Silero,"
        " Perth): every other command runs offline from it, and a missing model's error names the command"
        " that installs it.",
        ("e2e-voice models list", "e2e-voice models install --force"),
    ),
    "demo": (
        "One real offline pass through the bundled models: SmolLM2 answers a question, Kokoro speaks it, the"
        " speech goes through Opus and a Mimi codec, Whisper measures what each step cost; then the e2e"
        " model and the cascade answer spoken task questions side by side. Results in runs/demo/<time>/.",
        ('e2e-voice demo demo.question="Why is the sky blue?"', "e2e-voice demo demo.task_questions=0"),
    ),
    "serve": (
        "The full-duplex websocket server (moshi's protocol at /api/chat) with a browser page at /. It serves"
        " one system from configs/system/ per conversation: the cascade by default; system=e2e for the"
        " end-to-end model, system=loopback to check an audio path. Settings are serve.* overrides.",
        (
            "e2e-voice serve serve.port=8990 serve.tokens=secret",
            "e2e-voice serve system=e2e serve.host=0.0.0.0",
        ),
    ),
    "chat": (
        "Talk to a running server (ours or moshi's) from this machine's microphone and speakers; prints the"
        " assistant's text as it arrives.",
        ("e2e-voice chat", "e2e-voice chat --url ws://gpu-box:8998/api/chat --token secret"),
    ),
    "watermark": (
        "Detect or embed the imperceptible watermark every generated voice carries (Perth by default,"
        " AudioSeal with its checkpoint), to check whether a recording came from this system.",
        ("e2e-voice watermark detect reply.wav", "e2e-voice watermark embed in.wav marked.wav"),
    ),
    "voices": (
        "Register a custom voice (a reference recording or voice pack) together with the speaker's consent"
        " record; systems refuse unregistered custom voices.",
        (
            'e2e-voice voices register me.wav --name me --who "A. Person" --statement "I agree"',
            "e2e-voice voices list",
        ),
    ),
    "train-lm": (
        "Train the joint speech-text model (Moshi-style: text and codec streams of both speakers) with Hydra"
        " overrides; resumes after a kill and keeps the best validation's weights.",
        (
            "e2e-voice train-lm +experiment=lm_tiny_cpu",
            "e2e-voice train-lm +experiment=lm_task_cpu train.steps=200",
        ),
    ),
    "train-codec": (
        "Train a Mimi-style streaming audio codec (encoder, residual vector quantizer, decoder) with Hydra"
        " overrides; resumes after a kill.",
        ("e2e-voice train-codec +experiment=codec_debug", "e2e-voice train-codec +experiment=codec_gpu"),
    ),
    "export": (
        "Shrink a training run into a shippable checkpoint: a codec into one .safetensors file, an LM into an"
        " export directory the server and bench load.",
        (
            "e2e-voice export codec runs/train_codec/cpu1 checkpoints/codec_cpu/codec.safetensors",
            "e2e-voice export lm runs/train_lm/lm_tiny_cpu checkpoints/lm_tiny",
        ),
    ),
    "codec": (
        "Encode audio files to codec tokens, decode them back, or round-trip them, with a codec checkpoint;"
        " to hear what the codec keeps and count its bitrate.",
        (
            "e2e-voice codec encode talk.wav",
            "e2e-voice codec roundtrip clips/ -o recon/",
        ),
    ),
    "synth-data": (
        "Generate the synthetic two-channel dialogue corpus (user and assistant channels, word times,"
        " scenario ground truth) that training and the bench read.",
        (
            "e2e-voice synth-data num_conversations=200 workers=2",
            "e2e-voice synth-data num_conversations=3 assistant.engine=piper out_dir=/tmp/smoke",
        ),
    ),
    "converse": (
        "Play a user recording through one system, 80 ms frame by frame, and write the two-channel"
        " conversation (assistant, user) with its timed text and per-turn metrics.",
        (
            "e2e-voice converse --input user.wav --output out.wav",
            "e2e-voice converse --input user.wav --output out.wav system=remote system.url=ws://gpu-box:8998/api/chat",
        ),
    ),
    "bench": (
        "Run systems through the same conversations and measure them side by side: latency, turn-taking,"
        " WER of their own speech, prosody, real-time factor (and the task's answer accuracy). system=remote"
        " scores any moshi-protocol server. Writes runs/bench/<time>/report.md and results.json.",
        (
            "e2e-voice bench suite=small",
            "e2e-voice bench 'systems=[remote,cascade]'"
            " \"system_overrides.remote=['system.url=ws://gpu-box:8998/api/chat']\"",
        ),
    ),
}


def header(command: str) -> str:
    """The paragraph and examples printed before a command's own help ("" for a command without one)."""
    if command not in HELP:
        return ""
    paragraph, examples = HELP[command]
    lines = textwrap.wrap(f"e2e-voice {command}: {paragraph}", width=100)
    return "\n".join([*lines, "", "examples:", *(f"  {e}" for e in examples), ""])
