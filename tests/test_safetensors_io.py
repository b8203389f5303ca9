"""Safetensors files written byte-reproducibly: the metadata order of the header no longer varies."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from e2e_voice.codec import build_codec, load_codec, save_codec
from e2e_voice.safetensors_io import canonical_header, save_safetensors
from tests.helpers import SPECTRAL, TINY

META = {"e2e_voice.b": "2", "e2e_voice.a": '{"x": 1}', "e2e_voice.c": "ä"}
TENSORS = {"w": torch.arange(6, dtype=torch.float32).reshape(2, 3), "n": torch.tensor([7], dtype=torch.int64)}


def _header(path: Path) -> tuple[int, dict]:
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    return n, json.loads(data[8 : 8 + n])


def _rewrite_header(path: Path, header: dict, **dumps: object) -> None:
    """Give ``path`` another header (e.g. the metadata in another order), the tensor bytes unchanged."""
    n, _ = _header(path)
    data = path.read_bytes()
    text = json.dumps(header, **dumps).encode()  # type: ignore[arg-type]
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + data[8 + n :])


def test_canonical_header_sorts_metadata_in_place(tmp_path: Path) -> None:
    ours = save_safetensors(TENSORS, tmp_path / "ours.safetensors", META)
    _, header = _header(ours)
    assert list(header["__metadata__"]) == sorted(META)
    # The order safetensors' hash map may give: reversed keys, the same length.
    other = tmp_path / "other.safetensors"
    save_file(TENSORS, str(other), metadata=META)
    header["__metadata__"] = dict(reversed(list(header["__metadata__"].items())))
    _rewrite_header(other, header, separators=(",", ":"), ensure_ascii=False)
    assert other.read_bytes() != ours.read_bytes()
    canonical_header(other)
    assert other.read_bytes() == ours.read_bytes()


def test_canonical_header_of_another_length_keeps_the_tensors(tmp_path: Path) -> None:
    path = tmp_path / "spaced.safetensors"
    save_file(TENSORS, str(path), metadata=META)
    n, header = _header(path)
    header["__metadata__"] = dict(reversed(list(header["__metadata__"].items())))
    _rewrite_header(path, header, indent=2)  # a longer header: the data must not move with it
    assert _header(path)[0] > n
    canonical_header(path)
    assert path.read_bytes() == save_safetensors(TENSORS, tmp_path / "ours.safetensors", META).read_bytes()
    loaded = load_file(str(path))
    assert all(torch.equal(loaded[k], v) for k, v in TENSORS.items())
    assert not (tmp_path / "spaced.safetensors.header").exists()


def test_no_metadata_is_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "bare.safetensors"
    save_file(TENSORS, str(path))
    before = path.read_bytes()
    canonical_header(path)
    assert path.read_bytes() == before


def test_codec_exports_repeat_byte_for_byte_across_processes(tmp_path: Path) -> None:
    """The same codec saved by two processes gives the same file (before: the metadata's order, and so
    the SHA-256 the LM's streams file keys on, changed from process to process)."""
    torch.manual_seed(0)
    codec = build_codec(num_codebooks=4, **TINY, **SPECTRAL)
    source = save_codec(codec, tmp_path / "codec.safetensors", dtype=torch.float16)
    script = (
        "import sys; from e2e_voice.codec import load_codec, save_codec;"
        " save_codec(load_codec(sys.argv[1]), sys.argv[2], dtype=__import__('torch').float16)"
    )
    outs = [tmp_path / f"again{i}.safetensors" for i in range(2)]
    for out in outs:
        subprocess.run([sys.executable, "-c", script, str(source), str(out)], check=True)
    assert outs[0].read_bytes() == outs[1].read_bytes() == source.read_bytes()
    assert load_codec(outs[0]).num_codebooks == codec.num_codebooks
