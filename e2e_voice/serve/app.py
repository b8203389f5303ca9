"""``e2e-voice serve``: the full-duplex websocket server with its browser page (a Hydra app).

e2e-voice serve                       # the cascade (STT -> LLM -> TTS), a system that converses
e2e-voice serve system=loopback       # an echo, to check your audio path; any config under configs/system/
e2e-voice serve serve.port=9000 'serve.tokens=[secret]'
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from e2e_voice.constants import CONFIG_DIR
from e2e_voice.safety.watermark import backend_options, watermark_system
from e2e_voice.serve.server import ServeSettings, run_server
from e2e_voice.system import DuplexSystem

log = logging.getLogger(__name__)


def _build(
    system_cfg: DictConfig,
    watermark: bool,
    watermark_model: str | None,
    watermark_backend: str = "perth",
    watermark_options: dict[str, Any] | None = None,
) -> DuplexSystem:
    system = instantiate(system_cfg)
    if not isinstance(system, DuplexSystem):
        raise TypeError(
            f"system config {system_cfg.get('_target_')} built a {type(system).__name__}, not a DuplexSystem"
        )
    return watermark_system(
        system,
        enabled=watermark,
        model_path=watermark_model,
        backend=watermark_backend,
        **(watermark_options or {}),
    )


def system_factory(
    system_cfg: DictConfig,
    watermark: bool = True,
    watermark_model: str | None = None,
    watermark_backend: str = "perth",
    watermark_options: dict[str, Any] | None = None,
) -> Callable[[], DuplexSystem]:
    """A factory that builds one (watermarked) system per conversation, checked once up front.

    The check also loads what the system's target shares between conversations (the cascade's models
    with ``share_models: true``, the e2e engine), so the first connection is as fast as the next ones.
    """
    factory = functools.partial(
        _build, system_cfg, watermark, watermark_model, watermark_backend, watermark_options
    )
    factory().close()  # fail before accepting connections when a model or setting is missing
    return factory


@hydra.main(config_path=str(CONFIG_DIR), config_name="serve", version_base="1.3")
def _hydra_main(cfg: DictConfig) -> None:
    settings = ServeSettings(**OmegaConf.to_container(cfg.serve, resolve=True))  # type: ignore[arg-type]
    wm = cfg.watermark
    print(served_line(cfg), flush=True)  # before the (possibly slow) build, so the wait has a name
    factory = system_factory(
        cfg.system, wm.enabled, wm.model_path, str(wm.get("backend", "perth")), backend_options(wm)
    )
    run_server(factory, settings)


def served_line(cfg: DictConfig) -> str:
    """Which system this server serves, and how to pick another: the default is a choice the user did not
    make, and an echo or a cascade sound alike to a microphone check."""
    choice = HydraConfig.get().runtime.choices.get("system") if HydraConfig.initialized() else None
    target = cfg.system.get("_target_", "?")
    return f"e2e-voice serve: system={choice or '?'} ({target}); another: system=NAME from configs/system/"


def main(argv: list[str] | None = None) -> int:
    _hydra_main()
    return 0
