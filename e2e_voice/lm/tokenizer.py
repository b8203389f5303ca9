"""Text tokenizers for the inner monologue: a small sentencepiece model trained on the corpus text
(``tiny``), or SmolLM2's tokenizer (``smol``), behind one interface
(:class:`~e2e_voice.lm.streams.TextTokenizer`).

The text stream needs two ids no word ever produces: padding and end-of-padding. The sentencepiece
model reserves them as control symbols at moshi's ids (end of padding 0, padding 3); for SmolLM2 we
take two of its special tokens that never occur inside words.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import sentencepiece as spm

from e2e_voice.lm.streams import TextSpecials

# sentencepiece layout: 0 <epad>, 1 <unk>, 2 <reserved>, 3 <pad>; words start at 4.
SPM_SPECIALS = TextSpecials(pad_id=3, end_pad_id=0)


class SentencePieceTokenizer:
    """A sentencepiece model whose words are encoded one at a time (each gets its ``▁`` prefix)."""

    def __init__(self, model_file: str | Path) -> None:
        self.path = Path(model_file)
        if not self.path.is_file():
            raise FileNotFoundError(
                f"sentencepiece model {self.path} not found: train one with "
                "e2e_voice.lm.tokenizer.train_sentencepiece(texts, out_path)"
            )
        self.sp = spm.SentencePieceProcessor(model_file=str(self.path))
        self.specials = SPM_SPECIALS

    @property
    def vocab_size(self) -> int:
        return int(self.sp.get_piece_size())

    def encode_word(self, word: str) -> list[int]:
        return list(self.sp.encode(word.strip()))

    def decode(self, ids: Sequence[int]) -> str:
        return str(self.sp.decode([int(i) for i in ids]))

    def id_to_piece(self, i: int) -> str:
        """The text of one token as it streams out, a leading space for a word start (``▁``).

        The LM's text vocabulary (``lm.text_card``) may be larger than the tokenizer's; an id past the
        tokenizer's range stands for no text, so it streams as "" instead of failing mid-conversation.
        """
        if not 0 <= int(i) < self.vocab_size:
            return ""
        return str(self.sp.id_to_piece(int(i))).replace("▁", " ")


def train_sentencepiece(texts: Iterable[str], out_path: str | Path, vocab_size: int = 2000) -> Path:
    """Train a unigram sentencepiece model on ``texts``; write ``out_path`` (a ``.model`` file).

    ``vocab_size`` is an upper bound: on a tiny corpus it is lowered to what the text supports
    (sentencepiece refuses a vocabulary larger than the corpus allows), so check ``vocab_size`` of the
    result against the model's ``text_card``.
    """
    sentences = [t.strip() for t in texts if t.strip()]
    if not sentences:
        raise ValueError("no text to train the tokenizer on")
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    common: dict[str, Any] = dict(
        sentence_iterator=iter(sentences),
        model_writer=buffer,
        model_type="unigram",
        character_coverage=1.0,
        control_symbols=["<epad>"],
        unk_id=1,
        bos_id=-1,
        eos_id=-1,
        pad_id=3,
        user_defined_symbols=[],
        hard_vocab_limit=False,
        num_threads=1,
        minloglevel=2,
    )
    # sentencepiece puts control symbols first: <epad> lands on id 0; id 2 is a spare control symbol.
    common["control_symbols"] = ["<epad>", "<reserved>"]
    spm.SentencePieceTrainer.train(vocab_size=vocab_size, **common)
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_bytes(buffer.getvalue())
    tmp.replace(out)
    tok = SentencePieceTokenizer(out)
    pieces = [tok.sp.id_to_piece(i) for i in range(4)]
    assert pieces == ["<epad>", "<unk>", "<reserved>", "<pad>"], pieces
    return out


class HFWordTokenizer:
    """Adapts a Hugging Face tokenizer (SmolLM2's) to word-by-word encoding.

    Words are encoded with a leading space, as they appear mid-sentence, so that concatenated word
    tokens decode back to the sentence.
    """

    def __init__(self, tokenizer: Any, specials: TextSpecials) -> None:
        self.tok = tokenizer
        self.specials = specials

    @property
    def vocab_size(self) -> int:
        return len(self.tok)

    def encode_word(self, word: str) -> list[int]:
        return list(self.tok.encode(" " + word.strip(), add_special_tokens=False))

    def decode(self, ids: Sequence[int]) -> str:
        return str(self.tok.decode([int(i) for i in ids]))

    def id_to_piece(self, i: int) -> str:
        """The text of one token as it streams out (decoded alone, so byte-level marks become spaces)."""
        if not 0 <= int(i) < len(self.tok):
            return ""  # past the tokenizer's vocabulary: no text (see SentencePieceTokenizer.id_to_piece)
        return str(self.tok.decode([int(i)]))
