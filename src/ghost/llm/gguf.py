"""Read what Ollama-style clients want to know about a GGUF model file, without loading it.

A GGUF file starts with a header, a list of typed key/value pairs (architecture, name, file type,
tokenizer...) and a list of tensor descriptions. We read those (a few MB at most, no weights) to
report the architecture, the quantization and the parameter count. The layout is the one
documented in ggml's `docs/gguf.md` (versions 2 and 3: little-endian, 64-bit counts).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from math import prod
from pathlib import Path
from typing import Any, BinaryIO

from ghost.errors import GhostError

MAGIC = b"GGUF"
# Scalar value types by GGUF type id: struct format.
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9
# llama.cpp's `general.file_type` values (enum llama_ftype) for the usual quantizations.
FILE_TYPES = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K",
    11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S",
    17: "Q5_K_M", 18: "Q6_K", 32: "BF16",
}


class GGUFError(GhostError):
    """The file is not a GGUF model we can read."""


@dataclass(frozen=True)
class ModelMeta:
    architecture: str
    name: str
    parameters: int
    quantization: str
    size: int

    def for_model_routes(self) -> dict[str, Any]:
        """What the model routes (/api/tags, /api/show, /api/ps) say about the model file."""
        return {"size": self.size, "parameter_size": human_count(self.parameters),
                "quantization_level": self.quantization, "family": self.architecture,
                "basename": self.name}


def human_count(n: int) -> str:
    """Parameter count the way Ollama prints it: 134.52M, 7.2B."""
    if n >= 1_000_000_000:
        return f"{n / 1e9:.1f}B"
    if n >= 1_000_000:
        return f"{n / 1e6:.2f}M"
    return f"{n / 1e3:.2f}K"


class _Reader:
    def __init__(self, stream: BinaryIO) -> None:
        self.stream = stream

    def unpack(self, fmt: str) -> Any:
        size = struct.calcsize(fmt)
        data = self.stream.read(size)
        if len(data) != size:
            raise GGUFError("truncated GGUF header")
        return struct.unpack(fmt, data)[0]

    def string(self) -> str:
        length = self.unpack("<Q")
        return self.stream.read(length).decode("utf-8", errors="replace")

    def value(self, kind: int) -> Any:
        if kind in _SCALARS:
            return self.unpack(_SCALARS[kind])
        if kind == _STRING:
            return self.string()
        if kind == _ARRAY:
            item_kind, count = self.unpack("<I"), self.unpack("<Q")
            # Arrays are the tokenizer's vocabulary and scores: read past them, keep nothing.
            for _ in range(count):
                self.value(item_kind)
            return None
        raise GGUFError(f"unknown GGUF value type {kind}")


def _read_header(stream: BinaryIO) -> tuple[dict[str, Any], int]:
    reader = _Reader(stream)
    if stream.read(4) != MAGIC:
        raise GGUFError("not a GGUF file")
    version = reader.unpack("<I")
    if version < 2:
        raise GGUFError(f"GGUF version {version} is too old")
    tensor_count, kv_count = reader.unpack("<Q"), reader.unpack("<Q")
    metadata = {}
    for _ in range(kv_count):
        key = reader.string()
        metadata[key] = reader.value(reader.unpack("<I"))
    parameters = 0
    for _ in range(tensor_count):
        reader.string()
        dims = [reader.unpack("<Q") for _ in range(reader.unpack("<I"))]
        reader.unpack("<I"), reader.unpack("<Q")  # tensor type and data offset
        parameters += prod(dims)
    return metadata, parameters


def read_metadata(path: Path) -> dict[str, Any]:
    """The file's key/value pairs. Blocking: run it in a thread."""
    with path.open("rb") as stream:
        return _read_header(stream)[0]


def read_model_meta(path: Path) -> ModelMeta:
    """Blocking: run it in a thread."""
    try:
        with path.open("rb") as stream:
            metadata, parameters = _read_header(stream)
        size = path.stat().st_size
    except OSError as exc:
        raise GGUFError(f"cannot read model file {path.name}: {exc.strerror}") from exc
    file_type = metadata.get("general.file_type")
    return ModelMeta(
        architecture=str(metadata.get("general.architecture", "unknown")),
        name=str(metadata.get("general.name", path.stem)),
        parameters=parameters,
        quantization=FILE_TYPES.get(file_type, "unknown") if isinstance(file_type, int) else "unknown",
        size=size,
    )
