"""Resolve a model name to a local directory: explicit path, then the bundle cache, then the hub.

The hub is only tried when allowed (``allow_hub=True`` or ``E2E_VOICE_ALLOW_HUB=1``) and not marked
offline (``HF_HUB_OFFLINE=1``); every failure ends in an error that names what to run or set.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from e2e_voice.assets.specs import MODELS, ModelSpec

CACHE_ENV = "E2E_VOICE_CACHE"
ALLOW_HUB_ENV = "E2E_VOICE_ALLOW_HUB"
MARKER = ".bundle.json"
_HASH_CHUNK = 1 << 22


class ModelNotAvailableError(RuntimeError):
    """The model is neither at the given path, nor in the cache, nor reachable on the hub."""


class CorruptModelError(RuntimeError):
    """A cached model file is missing, truncated or does not match its sha256."""


def cache_dir() -> Path:
    """Root of the e2e-voice cache (``$E2E_VOICE_CACHE``, default ``~/.cache/e2e_voice``)."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "e2e_voice").expanduser()


def model_dir(name: str, cache: Path | None = None) -> Path:
    """Directory a bundled model is (or would be) installed in."""
    return (cache or cache_dir()) / "models" / name


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 4 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _read_marker(directory: Path) -> dict[str, dict[str, int | str]]:
    try:
        data = json.loads((directory / MARKER).read_text())
        return dict(data.get("files", {}))
    except (OSError, ValueError):
        return {}


def write_marker(directory: Path, spec: ModelSpec) -> None:
    """Record each verified file's hash, size and mtime so later checks can skip re-hashing."""
    files = {}
    for f in spec.files:
        st = (directory / f.name).stat()
        files[f.name] = {"sha256": f.sha256, "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    tmp = directory / (MARKER + ".tmp")
    tmp.write_text(json.dumps({"model": spec.name, "files": files}, indent=1))
    tmp.replace(directory / MARKER)


def check_model_dir(spec: ModelSpec, directory: Path, *, full: bool = False) -> None:
    """Raise CorruptModelError unless every file of ``spec`` in ``directory`` is intact.

    Sizes are always checked. Hashes are checked when ``full`` is set, or when a file changed since it
    was last verified (its size or mtime differ from the marker).
    """
    marker = _read_marker(directory)
    rehashed = False
    for f in spec.files:
        path = directory / f.name
        if not path.is_file():
            raise CorruptModelError(
                f"model '{spec.name}': file {path} is missing; run `make models` to rebuild the bundle"
            )
        st = path.stat()
        if st.st_size != f.size:
            raise CorruptModelError(
                f"model '{spec.name}': {path} is truncated or padded ({st.st_size} bytes, expected {f.size});"
                " run `make models` to rebuild it"
            )
        seen = marker.get(f.name, {})
        unchanged = seen.get("mtime_ns") == st.st_mtime_ns and seen.get("sha256") == f.sha256
        if full or not unchanged:
            digest = sha256_file(path)
            if digest != f.sha256:
                raise CorruptModelError(
                    f"model '{spec.name}': {path} is corrupted (sha256 {digest[:12]}…, expected"
                    f" {f.sha256[:12]}…); run `make models` to rebuild it"
                )
            rehashed = True
    if rehashed:
        write_marker(directory, spec)


def _hub_allowed(allow_hub: bool | None) -> bool:
    if allow_hub is not None:
        return allow_hub
    return os.environ.get(ALLOW_HUB_ENV, "").lower() in {"1", "true", "yes"}


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes"}


def _snapshot(repo: str, spec: ModelSpec, local_files_only: bool = False) -> str:
    """``snapshot_download`` of the spec's hub files from ``repo``; ``local_files_only``: never fetch."""
    from huggingface_hub import snapshot_download

    patterns = list(spec.hub_files) or None
    return str(snapshot_download(repo, allow_patterns=patterns, local_files_only=local_files_only))


def _from_hub(spec: ModelSpec) -> Path:
    if spec.hub_repo is None:
        raise ModelNotAvailableError(
            f"model '{spec.name}' has no hub repository in this layout; install it with `make models`"
            " or pass a local path"
        )
    if _hub_offline():
        raise ModelNotAvailableError(
            f"model '{spec.name}': the hub is allowed but HF_HUB_OFFLINE=1 is set, so {spec.hub_repo}"
            " cannot be fetched; install the offline bundle with `make models` or pass a local path"
        )
    try:
        local = _snapshot(spec.hub_repo, spec)
    except Exception as exc:  # any network or hub error ends in the same actionable message
        raise ModelNotAvailableError(
            f"model '{spec.name}': downloading {spec.hub_repo} from the hub failed ({type(exc).__name__}:"
            f" {exc}); install the offline bundle with `make models` or pass a local path"
        ) from exc
    return Path(local)


def resolve(
    name: str,
    path: str | os.PathLike[str] | None = None,
    *,
    cache: Path | None = None,
    allow_hub: bool | None = None,
    specs: dict[str, ModelSpec] | None = None,
) -> Path:
    """Return the local directory (or file, for an explicit file path) holding model ``name``.

    Order: ``path`` when given (it must exist), the bundle cache (checked for corruption), the hub
    when allowed and online, else ModelNotAvailableError naming the command that installs the model.

    Args:
        name: registry name, e.g. ``"whisper-base"`` (see ``e2e-voice models list``).
        path: explicit local file or directory; wins over everything else.
        cache: cache root, default :func:`cache_dir`.
        allow_hub: allow a hub download; default from ``$E2E_VOICE_ALLOW_HUB``.
        specs: model table, default :data:`MODELS` (tests pass their own).

    Returns:
        Path to the model directory (or the explicit path).

    Raises:
        ModelNotAvailableError: nothing usable was found.
        CorruptModelError: the cached copy is damaged.
    """
    table = MODELS if specs is None else specs
    if path is not None and str(path) != "":
        p = Path(path).expanduser()
        if not p.exists():
            raise ModelNotAvailableError(f"model '{name}': local path {p} does not exist")
        return p
    if name not in table:
        raise ModelNotAvailableError(f"unknown model '{name}'; known models: {', '.join(sorted(table))}")
    spec = table[name]
    directory = model_dir(name, cache)
    if spec.files and directory.is_dir():
        check_model_dir(spec, directory)
        return directory
    if _hub_allowed(allow_hub):
        return _from_hub(spec)
    if spec.in_bundle:
        raise ModelNotAvailableError(
            f"model '{name}' is not installed (looked in {directory}); install the offline bundle with"
            f" `make models` (or `e2e-voice models install {name}`), pass a local path, or set"
            f" {ALLOW_HUB_ENV}=1 to download {spec.hub_repo or 'it'} when online"
        )
    raise ModelNotAvailableError(
        f"model '{name}' is not part of the offline bundle; pass a local path to a copy, or set"
        f" {ALLOW_HUB_ENV}=1 to download {spec.hub_repo} when online"
    )


def local_copy(
    name: str, *, cache: Path | None = None, specs: dict[str, ModelSpec] | None = None
) -> Path | None:
    """Where :func:`resolve` would find model ``name`` without a download, or None; fetches nothing.

    The bundle's directory when installed, else the hub's local snapshot when one was downloaded before.
    For callers that describe a model (e.g. a cache key naming its files) and must not fetch it.
    """
    spec = (MODELS if specs is None else specs).get(name)
    if spec is None:
        return None
    directory = model_dir(name, cache)
    if spec.files and directory.is_dir():
        return directory
    if spec.hub_repo is None:
        return None
    try:
        local = _snapshot(spec.hub_repo, spec, local_files_only=True)
    except Exception:  # not downloaded (or an unreadable cache): nothing local to describe
        return None
    return Path(local)


def resolve_file(
    name: str,
    path: str | os.PathLike[str] | None = None,
    *,
    cache: Path | None = None,
    allow_hub: bool | None = None,
    specs: dict[str, ModelSpec] | None = None,
) -> Path:
    """Like :func:`resolve`, but return the model's main file (e.g. its GGUF or ONNX file)."""
    found = resolve(name, path, cache=cache, allow_hub=allow_hub, specs=specs)
    if found.is_file():
        return found
    spec = (MODELS if specs is None else specs)[name]
    if spec.main_file is None:
        return found
    main = found / spec.main_file
    if not main.exists():
        matches = sorted(found.rglob(Path(spec.main_file).name))
        if not matches:
            raise ModelNotAvailableError(f"model '{name}': {spec.main_file} not found under {found}")
        main = matches[0]
    return main
