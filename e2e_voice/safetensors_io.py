"""Writing safetensors files atomically and byte-reproducibly.

``safetensors.torch.save_file`` orders the ``__metadata__`` entries of the header as its Rust hash map
iterates, which changes from process to process: two exports of bit-identical weights came out with
different bytes, and so different SHA-256 sums (which the LM's streams file uses to name its codec). Here
the header is rewritten with the metadata keys sorted, so the same tensors and metadata always give the
same file.
"""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import torch
from safetensors.torch import save_file

_LEN = struct.Struct("<Q")  # the header's byte length, little-endian u64, before the JSON header


def canonical_header(path: str | Path) -> None:
    """Rewrite a safetensors file's header with its ``__metadata__`` keys sorted (tensors untouched).

    The tensor entries keep their order and offsets (offsets count from the end of the header, so a
    header of another length does not move them); the header is padded with spaces to a multiple of 8
    bytes, as safetensors pads it.
    """
    path = Path(path)
    with open(path, "rb") as f:
        (n,) = _LEN.unpack(f.read(_LEN.size))
        header = json.loads(f.read(n))
    meta = header.get("__metadata__")
    if not meta:
        return
    header["__metadata__"] = dict(sorted(meta.items()))
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-len(text) % 8)
    if len(text) == n:  # the usual case: the same bytes in another order, rewritten in place
        with open(path, "r+b") as f:
            f.seek(_LEN.size)
            f.write(text)
        return
    moved = path.with_name(path.name + ".header")
    with open(path, "rb") as src, open(moved, "wb") as dst:
        src.seek(_LEN.size + n)
        dst.write(_LEN.pack(len(text)) + text)
        shutil.copyfileobj(src, dst)
    moved.replace(path)


def save_safetensors(tensors: dict[str, torch.Tensor], path: str | Path, metadata: dict[str, str]) -> Path:
    """Write ``tensors`` with ``metadata`` to ``path`` atomically (a temporary file, then a rename), with
    a canonical header: the same tensors and metadata give the same bytes in every process."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=metadata)
    canonical_header(tmp)
    tmp.replace(path)
    return path
