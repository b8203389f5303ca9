"""``e2e-voice serve``: the full-duplex websocket server with its browser page (a Hydra app).

e2e-voice serve                       # the loopback system (echo), to check your audio path
e2e-voice serve system=cascade        # any system config under configs/system/
e2e-voice serve serve.port=9000 'serve.tokens=[secret]'
"""

from __future__ import annotations

import functools
import logging

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from e2e_voice.constants import CONFIG_DIR
from e2e_voice.serve.server import ServeSettings, run_server
from e2e_voice.system import DuplexSystem

log = logging.getLogger(__name__)


def system_factory(system_cfg: DictConfig) -> functools.partial[DuplexSystem]:
    """A factory that builds one system per conversation from its config, checked once up front."""
    factory = functools.partial(instantiate, system_cfg)
    probe = factory()  # fail before accepting connections when a model or setting is missing
    if not isinstance(probe, DuplexSystem):
        raise TypeError(
            f"system config {system_cfg.get('_target_')} built a {type(probe).__name__}, not a DuplexSystem"
        )
    return factory


@hydra.main(config_path=str(CONFIG_DIR), config_name="serve", version_base="1.3")
def _hydra_main(cfg: DictConfig) -> None:
    settings = ServeSettings(**OmegaConf.to_container(cfg.serve, resolve=True))  # type: ignore[arg-type]
    run_server(system_factory(cfg.system), settings)


def main(argv: list[str] | None = None) -> int:
    _hydra_main()
    return 0
