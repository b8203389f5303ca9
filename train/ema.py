"""Exponential moving averages of a model's weights, kept beside training without touching it.

Averaging the weights of the last few hundred or thousand steps smooths out the optimizer's step noise
at no cost in training (audiocraft's solvers, diffusion models and nanoGPT-style LM runs keep one). The
averages here only read the live model: the run's trajectory, losses and RNG draws are the same with or
without them, so the averaged and the live weights of one run can be compared paired, without a second
training run's seed-to-seed spread.

Every floating-point entry of the model's ``state_dict`` is averaged: parameters and float buffers
alike, which for moshi's RVQ means the codebooks' running ``embedding_sum`` and ``cluster_usage`` too
(their ratio is the codebook, so averaging both keeps a codebook that the averaged encoder's latents fit).
Integer and boolean buffers are taken from the live model when the averaged weights are read out.
"""

from __future__ import annotations

from typing import Any

import torch


def ema_tag(decay: float) -> str:
    """The name by which one average is stored and exported: ``ema0.999``."""
    return f"ema{decay:g}"


class WeightAverages:
    """One exponential moving average of a module's float state per decay.

    The first update copies the live weights; update ``n > 1`` moves the average toward them by ``1 - d_n``
    with ``d_n = min(decay, (1 + n) / (10 + n))``: early averages follow the weights closely, so that the
    first steps' weights do not linger in them (TensorFlow's ``num_updates`` schedule).

    Args:
        decays: one average per decay, each in (0, 1); the model is passed to :meth:`update`.

    Raises:
        ValueError: a decay outside (0, 1), or the same decay twice.
    """

    def __init__(self, decays: list[float] | tuple[float, ...]) -> None:
        values = [float(d) for d in decays]
        bad = [d for d in values if not 0.0 < d < 1.0]
        if bad:
            raise ValueError(
                f"ema_decays must each lie in (0, 1), like 0.999 (about the last 1,000 steps); got {bad}"
            )
        if len({ema_tag(d) for d in values}) != len(values):
            raise ValueError(f"ema_decays lists the same decay twice: {values}")
        self.decays = tuple(values)
        self.updates = 0
        # Filled by the first update: the weights after one step, not the random ones before it (moshi's
        # codebooks, and their float `_initialized` flag, are only set up by the first training batch).
        self.averages: dict[str, dict[str, torch.Tensor]] = {ema_tag(d): {} for d in self.decays}

    @staticmethod
    def _floats(module: torch.nn.Module) -> dict[str, torch.Tensor]:
        return {k: v for k, v in module.state_dict().items() if torch.is_floating_point(v)}

    def decay_at(self, decay: float, update: int) -> float:
        """The decay applied at (1-based) update ``update``."""
        return min(decay, (1.0 + update) / (10.0 + update))

    @torch.no_grad()
    def update(self, module: torch.nn.Module) -> None:
        """Move every average toward ``module``'s current weights (call once per optimizer step)."""
        self.updates += 1
        live = self._floats(module)
        for d in self.decays:
            keep = self.decay_at(d, self.updates)
            avg = self.averages[ema_tag(d)]
            if not avg:
                avg.update({k: v.detach().clone() for k, v in live.items()})
                continue
            if avg.keys() != live.keys():
                raise RuntimeError(
                    "the model's state changed keys since the averages were made; averages cannot follow"
                    " a model whose structure changes during training"
                )
            for k, v in live.items():
                avg[k].lerp_(v.detach().to(avg[k].dtype), 1.0 - keep)

    def averaged_state(self, tag: str, module: torch.nn.Module) -> dict[str, torch.Tensor]:
        """``module``'s full ``state_dict`` with the float entries replaced by average ``tag``."""
        if tag not in self.averages:
            raise KeyError(f"no weight average {tag!r}; this run keeps {sorted(self.averages) or 'none'}")
        state = dict(module.state_dict())
        state.update({k: v.clone() for k, v in self.averages[tag].items()})
        return state

    def state_dict(self) -> dict[str, Any]:
        return {"updates": self.updates, "averages": self.averages}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        missing = set(self.averages) - set(state["averages"])
        if missing:
            raise ValueError(
                f"the checkpoint holds no weight average {sorted(missing)} (it has"
                f" {sorted(state['averages']) or 'none'}): resume with the run's own ema_decays, or start a"
                " new run_name to average from step 0"
            )
        self.updates = int(state["updates"])
        saved = state["averages"]
        self.averages = {tag: {k: v.clone() for k, v in saved[tag].items()} for tag in self.averages}
