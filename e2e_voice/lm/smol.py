"""``smol``: moshi's temporal transformer initialised from SmolLM2-135M-Instruct, as Moshi starts
from its pretrained text LM (Helium).

SmolLM2 (Llama architecture) maps onto moshi's ``StreamingTransformer`` exactly:

* embeddings -> ``text_emb`` rows ``[0, vocab)``; the extra row moshi uses as the text start token
  gets SmolLM2's BOS embedding (``<|im_start|>``); the output head (tied) -> ``text_linear``;
* per layer: ``q_proj | k_proj | v_proj`` stacked -> ``self_attn.in_projs[0]`` (moshi packs q, then
  all k heads, then all v heads when ``kv_repeat > 1``); ``o_proj`` -> ``out_projs[0]``;
  grouped-query attention (9 query / 3 key-value heads) is native (``kv_repeat = 3``, expanded by
  repetition in the same head order as HF's ``repeat_kv``);
* ``gate_proj | up_proj`` stacked -> ``gating.linear_in`` (moshi computes ``silu(first half) *
  second half``), ``down_proj`` -> ``gating.linear_out``; the hidden width 1536 needs a
  non-default ``hidden_scale`` (see :func:`e2e_voice.lm.model.gated_hidden_scale`);
* ``input_layernorm`` / ``post_attention_layernorm`` / final ``norm`` -> ``norm1`` / ``norm2`` /
  ``out_norm`` (``rms_norm``, eps 1e-5, same formula);
* rope: theta 100000; HF Llama rotates half-split pairs (``rotate_half``), which is moshi's
  ``"rope_concat"``, not its default interleaved ``"rope"``.

The audio embeddings, depformer and audio heads are new (random), as in Moshi.
"""

from __future__ import annotations

from typing import Any

import torch
from moshi.models.lm import LMModel

from e2e_voice.lm.model import build_lm, lm_kwargs
from e2e_voice.lm.streams import TextSpecials
from e2e_voice.lm.tokenizer import HFWordTokenizer

# SmolLM2's special tokens 0 (<|endoftext|>) and 3 (<repo_name>) never occur inside words; they are
# moshi's default end-of-padding / padding ids too.
SMOL_SPECIALS = TextSpecials(pad_id=3, end_pad_id=0)


def smol_lm_kwargs(hf_config: Any, *, n_q: int, card: int, **overrides: Any) -> dict[str, Any]:
    """``LMModel`` kwargs whose temporal transformer has SmolLM2's shape (from its HF config)."""
    rope_theta = getattr(hf_config, "rope_theta", None)
    if rope_theta is None:
        rope_theta = (getattr(hf_config, "rope_parameters", None) or {}).get("rope_theta", 10_000.0)
    if getattr(hf_config, "hidden_act", "silu") != "silu":
        raise ValueError(f"expected a SiLU-gated Llama, got hidden_act={hf_config.hidden_act}")
    kw: dict[str, Any] = dict(
        n_q=n_q,
        card=card,
        text_card=hf_config.vocab_size,
        dim=hf_config.hidden_size,
        num_layers=hf_config.num_hidden_layers,
        num_heads=hf_config.num_attention_heads,
        num_kv_heads=hf_config.num_key_value_heads,
        ff_hidden=hf_config.intermediate_size,
        max_period=float(rope_theta),
        rope="rope_concat",
        norm="rms_norm",
        depformer_dim=256,
        depformer_num_layers=4,
        depformer_num_heads=4,
        depformer_ff_hidden=672,
        specials=SMOL_SPECIALS,
    )
    kw.update(overrides)
    return lm_kwargs(**kw)


@torch.no_grad()
def load_smol_weights(lm: LMModel, hf_model: Any) -> None:
    """Copy a HF Llama's weights into ``lm``'s text embedding, temporal transformer and text head."""
    # moshi's modules are reached by attribute; typed as Any so that mypy does not see Tensor | Module.
    lm_any: Any = lm
    cfg = hf_model.config
    base = hf_model.model
    layers = list(lm_any.transformer.layers)
    if len(base.layers) != len(layers):
        raise ValueError(f"layer count differs: HF {len(base.layers)} vs moshi {len(layers)}")
    vocab = base.embed_tokens.weight.shape[0]
    if lm.text_card != vocab:
        raise ValueError(f"text_card {lm.text_card} must equal the HF vocabulary size {vocab}")
    emb = base.embed_tokens.weight
    lm_any.text_emb.weight[:vocab] = emb
    bos = cfg.bos_token_id if cfg.bos_token_id is not None else 0
    lm_any.text_emb.weight[vocab] = emb[bos]  # moshi's text start token (id = text_card)
    lm_any.text_linear.weight.copy_(hf_model.lm_head.weight)
    for hf_layer, layer in zip(base.layers, layers):
        att = hf_layer.self_attn
        in_proj = torch.cat([att.q_proj.weight, att.k_proj.weight, att.v_proj.weight], dim=0)
        assert layer.self_attn.in_projs[0].weight.shape == in_proj.shape, (
            layer.self_attn.in_projs[0].weight.shape,
            in_proj.shape,
        )
        layer.self_attn.in_projs[0].weight.copy_(in_proj)
        layer.self_attn.out_projs[0].weight.copy_(att.o_proj.weight)
        mlp = hf_layer.mlp
        linear_in = torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight], dim=0)
        assert layer.gating.linear_in.weight.shape == linear_in.shape, (
            layer.gating.linear_in.weight.shape,
            linear_in.shape,
        )
        layer.gating.linear_in.weight.copy_(linear_in)
        layer.gating.linear_out.weight.copy_(mlp.down_proj.weight)
        layer.norm1.alpha.copy_(hf_layer.input_layernorm.weight.view(1, 1, -1))
        layer.norm2.alpha.copy_(hf_layer.post_attention_layernorm.weight.view(1, 1, -1))
    lm_any.out_norm.alpha.copy_(base.norm.weight.view(1, 1, -1))


def build_smol_lm(
    *,
    n_q: int,
    card: int,
    model: str = "smollm2-135m-instruct",
    model_path: str | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    **overrides: Any,
) -> tuple[LMModel, HFWordTokenizer]:
    """Build the ``smol`` LM from the bundled SmolLM2 (or ``model_path``); returns (model, tokenizer)."""
    from e2e_voice.text.llm import load_causal_lm

    hf_model, hf_tok = load_causal_lm(model, model_path, torch.float32)
    lm = build_lm(smol_lm_kwargs(hf_model.config, n_q=n_q, card=card, **overrides), device="cpu")
    load_smol_weights(lm, hf_model)
    return lm.to(device=device, dtype=dtype), HFWordTokenizer(hf_tok, SMOL_SPECIALS)
