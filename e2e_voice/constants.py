"""Constants shared by every layer of the package."""

from pathlib import Path

SAMPLE_RATE = 24_000
"""Audio sample rate of the codec, the models and the server, in Hz."""

FRAME_RATE = 12.5
"""Codec frame rate in Hz: one frame every 80 ms."""

FRAME_SIZE = int(SAMPLE_RATE / FRAME_RATE)
"""Samples per codec frame (1920 = 80 ms at 24 kHz)."""

REPO_ROOT = Path(__file__).resolve().parents[1]
"""Root of the source checkout (the package is installed in editable mode)."""

CONFIG_DIR = REPO_ROOT / "configs"


def repo_path(path: str | Path) -> Path:
    """A configured path: absolute as given, relative under the repository root (existing or not), so a
    command means the same files from any working directory (Hydra apps keep the caller's)."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else REPO_ROOT / p


def in_repo(path: str | Path) -> Path:
    """``path`` as given, or under the repository root when it is relative and only exists there
    (a committed ``checkpoints/...`` file named from another working directory)."""
    p = Path(path).expanduser()
    return REPO_ROOT / p if not p.exists() and not p.is_absolute() and (REPO_ROOT / p).exists() else p


"""Hydra configuration directory."""
