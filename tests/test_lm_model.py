"""LM builders, loss, LoRA, the moshiko loader and the SmolLM2 weight mapping."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from moshi.utils.compile import no_compile
from safetensors.torch import save_file

from e2e_voice.lm.builders import apply_lora
from e2e_voice.lm.loss import LossWeights, lm_loss
from e2e_voice.lm.model import build_lm, gated_hidden_scale, lm_kwargs
from e2e_voice.lm.moshiko import load_moshiko
from e2e_voice.lm.tokenizer import SPM_SPECIALS
from tests.lm_testing import tiny_kwargs, tiny_lm


@pytest.fixture(autouse=True)
def _eager():
    with no_compile():
        yield


def random_codes(
    B: int, n_q: int, T: int, card: int = 32, text_card: int = 48, seed: int = 0
) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    audio = torch.randint(0, card, (B, 2 * n_q, T), generator=g)
    text = torch.randint(4, text_card, (B, 1, T), generator=g)
    return torch.cat([text, audio], dim=1)


@pytest.mark.parametrize(
    ("dim", "hidden"),
    [
        pytest.param(576, 1536, id="smollm2"),
        pytest.param(256, 672, id="tiny"),
        pytest.param(64, 168, id="4x"),
    ],
)
def test_gated_hidden_width_is_exact(dim, hidden):
    m = build_lm(tiny_kwargs(dim=dim, num_heads=4, ff_hidden=hidden, num_layers=1))
    layer = m.transformer.layers[0]
    assert tuple(layer.gating.linear_in.weight.shape) == (2 * hidden, dim)
    assert int(gated_hidden_scale(dim, hidden) * dim) >= hidden


def test_bad_config_values_are_explained():
    with pytest.raises(ValueError, match="norm must be one of"):
        tiny_kwargs(norm="batch_norm")
    with pytest.raises(ValueError, match="not a multiple of num_kv_heads"):
        tiny_kwargs(num_kv_heads=3)
    with pytest.raises(ValueError, match="delays"):
        tiny_kwargs(delays=[0, 0, 1])
    with pytest.raises(ValueError, match="outside the text vocabulary"):
        lm_kwargs(
            **{
                **dict(n_q=1, card=8, text_card=2, dim=8, num_layers=1, num_heads=2, ff_hidden=16),
                **dict(
                    depformer_dim=8, depformer_num_layers=1, depformer_num_heads=2, depformer_ff_hidden=16
                ),
            }
        )


def test_loss_per_stream_and_masking():
    lm = tiny_lm()
    codes = random_codes(2, 2, 10)
    codes[1, :, 6:] = -1  # item 1 is shorter: padded frames carry no loss
    codes[0, 0, :4] = SPM_SPECIALS.pad_id
    out = lm(codes)
    loss = lm_loss(
        out, codes, LossWeights(text=1.0, semantic=2.0, acoustic=0.5, text_padding=0.25), SPM_SPECIALS
    )
    # Reference computed by hand over the valid positions.
    tm = out.text_mask[:, 0] & (codes[:, 0] >= 0)
    w = torch.where(codes[:, 0] == SPM_SPECIALS.pad_id, 0.25, 1.0)
    ce = F.cross_entropy(out.text_logits[:, 0][tm], codes[:, 0][tm], reduction="none")
    text = (ce * w[tm]).sum() / w[tm].sum()
    am = out.mask & (codes[:, 1:3] >= 0)
    sem = F.cross_entropy(out.logits[:, 0][am[:, 0]], codes[:, 1][am[:, 0]])
    ac = F.cross_entropy(out.logits[:, 1:][am[:, 1:]], codes[:, 2:3][am[:, 1:]])
    torch.testing.assert_close(loss.text, text)
    torch.testing.assert_close(loss.semantic, sem)
    torch.testing.assert_close(loss.acoustic, ac)
    torch.testing.assert_close(loss.total, text + 2 * sem + 0.5 * ac)
    assert not am[1, :, 6:].any() and not am[:, 1, -1].any()  # padding and the delayed acoustic tail
    loss.total.backward()
    assert all(torch.isfinite(p.grad).all() for p in lm.parameters() if p.grad is not None)


def test_tiny_model_overfits_one_batch():
    torch.set_num_threads(1)
    lm = tiny_lm(seed=1)
    lm.train()
    codes = random_codes(2, 2, 16, seed=3)
    opt = torch.optim.Adam(lm.parameters(), lr=1e-2)
    first = None
    for _ in range(120):
        loss = lm_loss(lm(codes), codes, specials=SPM_SPECIALS)
        first = first if first is not None else float(loss.total.detach())
        opt.zero_grad()
        loss.total.backward()
        opt.step()
    last = float(loss.total.detach())
    assert last < 0.1 * first, (first, last)


def test_lora_starts_from_the_base_model_and_trains_only_adapters():
    lm = tiny_lm()
    lm.eval()
    codes = random_codes(1, 2, 8)
    before = lm(codes).text_logits
    n = apply_lora(lm, rank=4)
    after = lm(codes).text_logits
    torch.testing.assert_close(before, after)
    trainable = {name for name, p in lm.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in name for name in trainable)
    assert n == sum(p.numel() for p in lm.parameters() if p.requires_grad)


def test_moshiko_loader_reads_a_same_format_checkpoint(tmp_path):
    kw = tiny_kwargs()
    reference = tiny_lm(seed=5)
    save_file(
        {k: v.contiguous() for k, v in reference.state_dict().items()}, str(tmp_path / "model.safetensors")
    )
    loaded = load_moshiko(tmp_path, lm_kwargs=kw, dtype=torch.float32)
    ref_state = reference.state_dict()
    for key, value in loaded.state_dict().items():
        torch.testing.assert_close(value, ref_state[key], rtol=0, atol=0, msg=key)
    codes = random_codes(1, 2, 6)
    reference.eval()
    torch.testing.assert_close(loaded(codes).text_logits, reference(codes).text_logits)


def test_moshiko_without_checkpoint_says_how_to_get_it(tmp_path):
    from e2e_voice.assets.registry import ModelNotAvailableError

    with pytest.raises(ModelNotAvailableError, match="local path"):
        load_moshiko(tmp_path / "missing")


@pytest.mark.slow
def test_smol_mapping_reproduces_smollm2_logits():
    from e2e_voice.lm.smol import build_smol_lm
    from e2e_voice.text.llm import load_causal_lm

    torch.set_num_threads(2)
    lm, tok = build_smol_lm(n_q=2, card=64)
    hf, hf_tok = load_causal_lm()
    lm.eval()
    hf.eval()
    ids = hf_tok.encode("The capital of France is Paris. The capital of Germany is", add_special_tokens=False)
    T = len(ids)
    with torch.no_grad():
        reference = hf(torch.tensor([[hf.config.bos_token_id, *ids]])).logits[:, 1:]  # [1, T, V]
        # The temporal transformer (forward_text) on moshi's start token then the prompt, with the
        # audio streams carrying no signal (-1: moshi's zero token, an exactly zero embedding).
        seq = torch.full((1, 5, T + 1), -1, dtype=torch.long)
        seq[0, 0, 0] = lm.text_card
        seq[0, 0, 1:] = torch.tensor(ids)
        _, text_logits = lm.forward_text(seq)
        ours = text_logits[:, 0, 1:]
    torch.testing.assert_close(ours, reference, atol=1e-3, rtol=1e-3)
    assert hf_tok.decode(int(ours[0, -1].argmax())).strip() == "Berlin"
    assert tok.decode(tok.encode_word("Berlin")).strip() == "Berlin"


def test_build_tiny_from_the_config_file(tmp_path):
    from omegaconf import OmegaConf

    from e2e_voice.constants import CONFIG_DIR
    from e2e_voice.lm.builders import build_from_config
    from tests.lm_testing import fixture_tokenizer

    cfg = OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / "lm" / "tiny.yaml"))
    assert isinstance(cfg, dict)
    cfg.update(n_q=2, num_layers=1, delays={"mode": "tts", "lag_frames": 3, "acoustic": 1})
    with pytest.raises(ValueError, match="needs a sentencepiece tokenizer"):
        build_from_config(cfg)
    tok = fixture_tokenizer(tmp_path)
    built = build_from_config(cfg, tokenizer_path=tok.path)
    assert built.delays == [0, 3, 4, 3, 4] and built.model.delays == built.delays
    assert built.model.existing_text_padding_id == built.specials.pad_id == 3
    with pytest.raises(ValueError, match="raise text_card"):
        build_from_config({**cfg, "text_card": 8}, tokenizer_path=tok.path)
    with pytest.raises(ValueError, match=r"lm\.name must be one of"):
        build_from_config({**cfg, "name": "huge"})
