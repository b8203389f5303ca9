"""Load a causal text LM from the bundle (GGUF) with transformers, caching the converted weights.

Converting the GGUF file (de-quantising Q4_1 to float) takes ~20 s on 2 cores; the result is saved once
under the cache as safetensors, after which loading takes a couple of seconds.
"""

from __future__ import annotations

import copy
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_model

from e2e_voice.assets.registry import cache_dir, resolve_file

DEFAULT_SYSTEM_PROMPT = (
    "You are a helpful voice assistant. Answer in one or two short, spoken-style sentences."
)


def load_causal_lm(
    model: str = "smollm2-135m-instruct", model_path: str | None = None, dtype: torch.dtype = torch.float32
) -> tuple[Any, Any]:
    """Return ``(model, tokenizer)`` for a registry name or an explicit path.

    A GGUF file is converted once and cached under ``<cache>/converted/<model>``; a directory in
    Hugging Face format is loaded as is.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = resolve_file(model, model_path)
    if src.is_dir():
        return AutoModelForCausalLM.from_pretrained(src, dtype=dtype), AutoTokenizer.from_pretrained(src)
    converted = cache_dir() / "converted" / f"{model}-{src.stem}"
    if not (converted / "config.json").is_file():
        lm = AutoModelForCausalLM.from_pretrained(src.parent, gguf_file=src.name, dtype=torch.float32)
        tok = AutoTokenizer.from_pretrained(src.parent, gguf_file=src.name)
        converted.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=converted.parent, prefix=".tmp-"))
        # save_pretrained refuses GGUF-quantised models; the de-quantised weights are plain tensors.
        config = copy.deepcopy(lm.config)
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        config.save_pretrained(tmp)
        save_model(lm, str(tmp / "model.safetensors"))
        tok.save_pretrained(tmp)
        shutil.rmtree(converted, ignore_errors=True)
        tmp.rename(converted)
        return lm.to(dtype), tok  # type: ignore[arg-type]  # transformers stub wraps .to
    return AutoModelForCausalLM.from_pretrained(converted, dtype=dtype), AutoTokenizer.from_pretrained(
        converted
    )


@dataclass
class ChatLM:
    """A small chat model: keeps no history itself, answers a list of messages.

    Args:
        model: registry name of the LM.
        model_path: explicit path (GGUF file or HF directory).
        max_new_tokens: cap on generated tokens.
        temperature: 0 for greedy decoding.
        dtype: ``float32`` or ``bfloat16`` (faster on CPUs with AVX512-BF16).
        system_prompt: instruction given before the conversation.
        whole_sentences: cut a trailing fragment when generation hits ``max_new_tokens``.
    """

    model: str = "smollm2-135m-instruct"
    model_path: str | None = None
    max_new_tokens: int = 48
    temperature: float = 0.0
    dtype: str = "float32"
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    whole_sentences: bool = True
    _lm: Any = field(init=False, repr=False, default=None)
    _tok: Any = field(init=False, repr=False, default=None)

    def __post_init__(self) -> None:
        self._lm, self._tok = load_causal_lm(self.model, self.model_path, getattr(torch, self.dtype))
        self._lm.eval()

    def reply(self, user_text: str, history: list[dict[str, str]] | None = None, seed: int = 0) -> str:
        """Answer ``user_text`` after ``history`` (a list of ``{"role", "content"}`` messages)."""
        messages = [{"role": "system", "content": self.system_prompt}, *(history or [])]
        messages.append({"role": "user", "content": user_text})
        enc = self._tok.apply_chat_template(
            messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        torch.manual_seed(seed)
        with torch.inference_mode():
            out = self._lm.generate(
                **enc,
                max_new_tokens=self.max_new_tokens,
                do_sample=self.temperature > 0,
                temperature=self.temperature if self.temperature > 0 else None,
                top_p=None,
                top_k=None,
                pad_token_id=self._tok.eos_token_id,
            )
        text = str(self._tok.decode(out[0, enc["input_ids"].shape[1] :], skip_special_tokens=True)).strip()
        return last_whole_sentences(text) if self.whole_sentences else text


def last_whole_sentences(text: str) -> str:
    """Drop a trailing sentence fragment (generation stopped at ``max_new_tokens``), if any whole one is left.

    A spoken answer that stops mid-word sounds broken; a shorter answer does not.
    """
    cut = max(text.rfind(c) for c in ".!?")
    return text[: cut + 1] if cut > 0 else text
