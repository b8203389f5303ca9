"""Per-stream cross-entropy for the joint speech-text model.

Moshi weighs the streams separately: text (inner monologue), the semantic codebook and the acoustic
codebooks, and gives text *padding* tokens a lower weight (they are most of the text stream).
Positions the model cannot predict are masked: moshi's ``LMOutput.mask`` already excludes the last
frames of delayed rows and frames whose target is ``ZERO_TOKEN`` (-1), which is how batches pad
shorter conversations.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from moshi.models.lm import LMOutput

from e2e_voice.lm.streams import DEFAULT_SPECIALS, TextSpecials


@dataclass(frozen=True)
class LossWeights:
    """Weights of the three streams in the total, and of text padding tokens within text."""

    text: float = 1.0
    semantic: float = 1.0
    acoustic: float = 1.0
    text_padding: float = 0.5


@dataclass
class LMLoss:
    """The weighted total (for backward) and the per-stream means (for logging)."""

    total: torch.Tensor  # [] float, differentiable
    text: torch.Tensor  # [] float, detached mean CE of text tokens (padding down-weighted)
    semantic: torch.Tensor  # [] float, detached mean CE of the semantic codebook
    acoustic: torch.Tensor  # [] float, detached mean CE over the acoustic codebooks

    def metrics(self, prefix: str) -> dict[str, float]:
        """Namespaced numbers for logging, e.g. ``train/loss/text``."""
        return {
            f"{prefix}/loss": float(self.total.detach()),
            f"{prefix}/loss/text": float(self.text),
            f"{prefix}/loss/semantic": float(self.semantic),
            f"{prefix}/loss/acoustic": float(self.acoustic),
        }


def _masked_ce(
    logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor, weight: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean CE over ``mask``: logits ``[..., card]``, targets/mask/weight ``[...]``."""
    if not mask.any():
        # A zero that keeps the graph (data-parallel ranks must all reach every parameter).
        return logits[..., :1].nan_to_num().sum() * 0.0
    ce = F.cross_entropy(logits[mask].float(), targets[mask], reduction="none")
    if weight is None:
        return ce.mean()
    w = weight[mask]
    return (ce * w).sum() / w.sum().clamp_min(1e-8)


def lm_loss(
    out: LMOutput,
    codes: torch.Tensor,
    weights: LossWeights | None = None,
    specials: TextSpecials = DEFAULT_SPECIALS,
) -> LMLoss:
    """Loss of ``LMModel.forward(codes)`` against the aligned ``codes`` ``[B, K, T]``.

    Args:
        out: the model output (logits already re-aligned with ``codes``).
        codes: aligned streams ``[B, 1 + 2 n_q, T]``; ``-1`` marks padding.
        weights: stream weights.
        specials: text padding ids (padding gets ``weights.text_padding``).
    """
    weights = weights or LossWeights()
    dep_q = out.logits.shape[1]
    text_target = codes[:, 0]  # [B, T]
    text_mask = out.text_mask[:, 0] & (text_target >= 0)
    text_w = torch.where(text_target == specials.pad_id, weights.text_padding, 1.0).to(out.text_logits.dtype)
    text = _masked_ce(out.text_logits[:, 0], text_target, text_mask, text_w)

    audio_target = codes[:, 1 : 1 + dep_q]  # [B, dep_q, T]
    audio_mask = out.mask & (audio_target >= 0)
    semantic = _masked_ce(out.logits[:, 0], audio_target[:, 0], audio_mask[:, 0])
    if dep_q > 1:
        acoustic = _masked_ce(out.logits[:, 1:], audio_target[:, 1:], audio_mask[:, 1:])
    else:
        acoustic = semantic.new_zeros(())
    total = weights.text * text + weights.semantic * semantic + weights.acoustic * acoustic
    return LMLoss(total=total, text=text.detach(), semantic=semantic.detach(), acoustic=acoustic.detach())
