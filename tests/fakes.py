"""Deterministic offline stand-ins shared by tests."""

from __future__ import annotations

import hashlib
import re

import numpy as np


class HashEmbedder:
    """Bag of hashed lowercase words -> unit vector. Texts sharing words get similar vectors."""

    name = "fake-hash"
    dim = 64
    max_tokens = 64

    def __init__(self):
        self.calls = 0  # texts embedded so far: lets tests check what was re-embedded

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def _vec(self, text: str) -> np.ndarray:
        v = np.zeros(self.dim, np.float32)
        for w in re.findall(r"\w+", text.lower()):
            v[int(hashlib.md5(w.encode()).hexdigest(), 16) % self.dim] += 1.0
        n = np.linalg.norm(v)
        return v / n if n else v

    def encode(self, texts, batch_size=32, progress=None):
        self.calls += len(texts)
        out = np.stack([self._vec(t) for t in texts]) if texts else np.zeros((0, self.dim), np.float32)
        if progress:
            progress(len(texts), len(texts))
        return out
