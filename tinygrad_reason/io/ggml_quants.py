"""GGML tensor types and their dequantization to float32, in NumPy.

A quantized GGML tensor is a sequence of blocks along its fastest axis (ne[0], the row). Each block
of 32 values is stored as (little-endian):
  Q4_0: fp16 scale d, 16 bytes of 4-bit codes q          x = d * (q - 8)
  Q4_1: fp16 scale d, fp16 minimum m, 16 bytes of codes   x = d * q + m
  Q8_0: fp16 scale d, 32 int8 codes q                     x = d * q
In the 4-bit types byte j holds value j in its low nibble and value j + 16 in its high nibble.
F32, F16 and BF16 (the top half of a float32) are stored plainly.
"""
from __future__ import annotations

import numpy as np

QK = 32   # values per block of Q4_0 / Q4_1 / Q8_0


class GGMLType:
    """One tensor type: its id in the GGUF file, values per block and bytes per block."""

    def __init__(self, name: str, type_id: int, block_values: int, block_bytes: int, dequantize=None):
        self.name, self.id, self.block_values, self.block_bytes = name, type_id, block_values, block_bytes
        self.dequantize = dequantize

    def n_bytes(self, n_values: int) -> int:
        return n_values // self.block_values * self.block_bytes

    def __repr__(self) -> str:
        return f"GGMLType({self.name})"


def _blocks(raw: np.ndarray, block_bytes: int) -> np.ndarray:
    return np.frombuffer(raw, dtype=np.uint8).reshape(-1, block_bytes)


def _fp16(blocks: np.ndarray, start: int) -> np.ndarray:
    """The fp16 field at byte `start` of each block, as a float32 column."""
    return blocks[:, start:start + 2].copy().view("<f2").astype(np.float32)


def _nibbles(codes: np.ndarray) -> np.ndarray:
    """(blocks, 16) bytes -> (blocks, 32) codes 0..15: the low nibbles, then the high nibbles."""
    return np.concatenate([codes & 0x0F, codes >> 4], axis=1).astype(np.float32)


def dequantize_q4_0(raw) -> np.ndarray:
    b = _blocks(raw, 18)
    return (_fp16(b, 0) * (_nibbles(b[:, 2:]) - 8.0)).reshape(-1)


def dequantize_q4_1(raw) -> np.ndarray:
    b = _blocks(raw, 20)
    return (_fp16(b, 0) * _nibbles(b[:, 4:]) + _fp16(b, 2)).reshape(-1)


def dequantize_q8_0(raw) -> np.ndarray:
    b = _blocks(raw, 34)
    return (_fp16(b, 0) * b[:, 2:].view(np.int8).astype(np.float32)).reshape(-1)


def dequantize_f32(raw) -> np.ndarray:
    return np.frombuffer(raw, dtype="<f4").astype(np.float32)


def dequantize_f16(raw) -> np.ndarray:
    return np.frombuffer(raw, dtype="<f2").astype(np.float32)


def dequantize_bf16(raw) -> np.ndarray:
    return (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)


# ggml's type ids (ggml.h); the ones without a dequantizer are named so errors can say what a file holds
_TYPES = [GGMLType("F32", 0, 1, 4, dequantize_f32), GGMLType("F16", 1, 1, 2, dequantize_f16),
          GGMLType("Q4_0", 2, QK, 18, dequantize_q4_0), GGMLType("Q4_1", 3, QK, 20, dequantize_q4_1),
          GGMLType("Q8_0", 8, QK, 34, dequantize_q8_0), GGMLType("BF16", 30, 1, 2, dequantize_bf16)]
_UNSUPPORTED = {6: "Q5_0", 7: "Q5_1", 9: "Q8_1", 10: "Q2_K", 11: "Q3_K", 12: "Q4_K", 13: "Q5_K", 14: "Q6_K",
                15: "Q8_K", 16: "IQ2_XXS", 17: "IQ2_XS", 18: "IQ3_XXS", 19: "IQ1_S", 20: "IQ4_NL", 21: "IQ3_S",
                22: "IQ2_S", 23: "IQ4_XS", 24: "I8", 25: "I16", 26: "I32", 27: "I64", 28: "F64", 29: "IQ1_M",
                34: "TQ1_0", 35: "TQ2_0", 39: "MXFP4"}
GGML_TYPES = {t.id: t for t in _TYPES}
SUPPORTED = tuple(t.name for t in _TYPES)


def ggml_type(type_id: int) -> GGMLType:
    """The GGMLType of a type id; an id without a dequantizer here raises ValueError naming it."""
    if type_id in GGML_TYPES:
        return GGML_TYPES[type_id]
    name = _UNSUPPORTED.get(type_id, "unknown")
    raise ValueError(f"tensor type {type_id} ({name}) is not supported; supported: {', '.join(SUPPORTED)}")
