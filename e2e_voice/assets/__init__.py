"""Model assets: the offline bundle (what to fetch, how to check it) and the registry that resolves names."""

from e2e_voice.assets.registry import (
    CorruptModelError,
    ModelNotAvailableError,
    cache_dir,
    resolve,
)
from e2e_voice.assets.specs import MODELS, BundleFile, ModelSpec, Part

__all__ = [
    "MODELS",
    "BundleFile",
    "CorruptModelError",
    "ModelNotAvailableError",
    "ModelSpec",
    "Part",
    "cache_dir",
    "resolve",
]
