#!/usr/bin/env python3
"""Independent NumPy reference forward pass of a Llama GGUF model (float64).

    python3 tests/tools/ref_llama.py MODEL.gguf 1,2,3 --out logits.npy
    python3 tests/tools/ref_llama.py MODEL.gguf 1,2,3 --greedy 10

    from ref_llama import logits
    z = logits("model.gguf", [1, 2, 3])      # float64 [n_tokens, n_vocab]

It shares nothing with strata's C code: the file is read with gguf-py, the
weights are dequantized with gguf.quants.dequantize, and the math is written
from the Llama definition:
  x = embd[tokens]
  per layer: h = rmsnorm(x) * attn_norm; q, k, v = h Wq^T, h Wk^T, h Wv^T;
             RoPE on q, k ("normal" GGUF style: adjacent pairs (2i, 2i+1)
             rotated by pos * freq_scale * base^(-2i / rope_dim));
             causal GQA attention (query head j reads kv head j // (n_head/n_kv));
             x += attn Wo^T; h = rmsnorm(x) * ffn_norm;
             x += (silu(h Wgate^T) * (h Wup^T)) Wdown^T
  logits = (rmsnorm(x) * output_norm) Wout^T   (Wout = token_embd when tied)
Weights are dequantized once per file and cached as float64 (about 8 bytes
per parameter: 1.1 GB for a 135M model), so a forward pass is only BLAS
calls; all activations and products are float64.
"""
from __future__ import annotations

import argparse
import functools
import sys

import numpy as np

import gguf


class RefModel:
    """Hyper-parameters and dequantized weights of one GGUF file."""

    def __init__(self, path: str):
        self.path = path
        r = gguf.GGUFReader(path)
        self._fields = r.fields
        arch = self._str("general.architecture")
        if arch != "llama":
            raise ValueError(f"{path}: architecture '{arch}' is not supported (supported: llama)")
        a = "llama."
        self.n_layer = self._int(a + "block_count")
        self.n_embd = self._int(a + "embedding_length")
        self.n_head = self._int(a + "attention.head_count")
        self.n_head_kv = self._int(a + "attention.head_count_kv", self.n_head)
        self.head_dim = self._int(a + "attention.key_length", self.n_embd // self.n_head)
        self.rope_dim = self._int(a + "rope.dimension_count", self.head_dim)
        self.rope_base = self._float(a + "rope.freq_base", 10000.0)
        self.eps = self._float(a + "attention.layer_norm_rms_epsilon", 1e-5)
        scale = 1.0
        stype = self._str(a + "rope.scaling.type", "none")
        if stype == "linear":
            scale = self._float(a + "rope.scaling.factor", self._float(a + "rope.scale_linear", 1.0))
        elif stype != "none":
            raise ValueError(f"{path}: rope scaling '{stype}' is not supported")
        else:
            scale = self._float(a + "rope.scale_linear", 1.0)
        self.freq_scale = 1.0 / scale
        self._tensors = {t.name: t for t in r.tensors}
        self._cache: dict[str, np.ndarray] = {}
        self.tok_embd = self.w("token_embd.weight")
        self.n_vocab = self.tok_embd.shape[0]
        self.output = self.w("output.weight") if "output.weight" in self._tensors else self.tok_embd

    def qtype(self, name) -> str:
        """GGML type name of a weight; None means the output head."""
        if name is None:
            name = "output.weight" if "output.weight" in self._tensors else "token_embd.weight"
        return self._tensors[name].tensor_type.name

    # metadata helpers
    def _get(self, key):
        f = self._fields.get(key)
        return None if f is None else f.contents()

    def _int(self, key, default=None):
        v = self._get(key)
        if v is None:
            if default is None:
                raise ValueError(f"{self.path}: key '{key}': missing")
            return default
        return int(v)

    def _float(self, key, default):
        v = self._get(key)
        return float(default if v is None else v)

    def _str(self, key, default=None):
        v = self._get(key)
        if v is None:
            if default is None:
                raise ValueError(f"{self.path}: key '{key}': missing")
            return default
        return v

    def w(self, name: str) -> np.ndarray:
        """Dequantized weight as float64 [ne1, ne0] (rows, cols), cached."""
        if name not in self._cache:
            t = self._tensors[name]
            x = gguf.quants.dequantize(np.asarray(t.data), t.tensor_type)
            shape = tuple(int(n) for n in reversed(t.shape.tolist()))   # numpy order
            self._cache[name] = np.ascontiguousarray(x.reshape(shape), dtype=np.float64)
        return self._cache[name]


@functools.lru_cache(maxsize=2)
def load(path: str) -> RefModel:
    return RefModel(path)


def _rmsnorm(x: np.ndarray, w: np.ndarray, eps: float) -> np.ndarray:
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def _rope(x: np.ndarray, pos: np.ndarray, m: RefModel) -> np.ndarray:
    """x: [n, heads, head_dim]; rotates the adjacent pairs of the first rope_dim dims."""
    half = m.rope_dim // 2
    inv = m.rope_base ** (-2.0 * np.arange(half, dtype=np.float64) / m.rope_dim)
    theta = (pos[:, None].astype(np.float64) * m.freq_scale) * inv[None, :]   # [n, half]
    c, s = np.cos(theta)[:, None, :], np.sin(theta)[:, None, :]
    out = x.copy()
    x0, x1 = x[..., 0:m.rope_dim:2], x[..., 1:m.rope_dim:2]
    out[..., 0:m.rope_dim:2] = x0 * c - x1 * s
    out[..., 1:m.rope_dim:2] = x0 * s + x1 * c
    return out


def _mm(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """x [n, cols] times w^T for w [rows, cols], both float64."""
    return x @ w.T


QUANTIZED = {"Q4_0", "Q4_1", "Q8_0", "Q6_K"}


def _q8(x: np.ndarray) -> np.ndarray:
    """Activation rows rounded as an 8-bit block quantizer does (blocks of 32,
    scale max|x|/127, round half away from zero): used to measure the error
    that quantizing activations alone introduces."""
    n, cols = x.shape
    b = x.reshape(n, cols // 32, 32)
    d = np.abs(b).max(axis=-1, keepdims=True) / 127.0
    safe = np.where(d == 0, 1.0, d)
    q = np.sign(b / safe) * np.floor(np.abs(b / safe) + 0.5)
    return (q * d).reshape(n, cols)


def forward(m: RefModel, tokens: list[int], act_q8: bool = False) -> np.ndarray:
    """float64 forward pass; with act_q8, activations entering a product with a
    quantized weight are first rounded to 8 bits (see _q8)."""
    def mm(x, name):
        if act_q8 and m.qtype(name) in QUANTIZED:
            x = _q8(x)
        return _mm(x, m.output if name is None else m.w(name))

    ids = np.asarray(tokens, dtype=np.int64)
    if ids.ndim != 1 or len(ids) == 0:
        raise ValueError("need at least one token id")
    if ids.min() < 0 or ids.max() >= m.n_vocab:
        raise ValueError(f"token id outside 0..{m.n_vocab - 1}")
    n = len(ids)
    pos = np.arange(n)
    hd, nh, nkv = m.head_dim, m.n_head, m.n_head_kv
    group = nh // nkv
    mask = np.triu(np.full((n, n), -np.inf), k=1)
    x = m.tok_embd[ids].copy()
    for i in range(m.n_layer):
        p = f"blk.{i}."
        h = _rmsnorm(x, m.w(p + "attn_norm.weight"), m.eps)
        q = _rope(mm(h, p + "attn_q.weight").reshape(n, nh, hd), pos, m)
        k = _rope(mm(h, p + "attn_k.weight").reshape(n, nkv, hd), pos, m)
        v = mm(h, p + "attn_v.weight").reshape(n, nkv, hd)
        k = np.repeat(k, group, axis=1)                      # [n, nh, hd]
        v = np.repeat(v, group, axis=1)
        s = np.einsum("qhd,khd->hqk", q, k) / np.sqrt(hd) + mask
        s = np.exp(s - s.max(axis=-1, keepdims=True))
        s /= s.sum(axis=-1, keepdims=True)
        att = np.einsum("hqk,khd->qhd", s, v).reshape(n, nh * hd)
        x = x + mm(att, p + "attn_output.weight")
        h = _rmsnorm(x, m.w(p + "ffn_norm.weight"), m.eps)
        g = mm(h, p + "ffn_gate.weight")
        u = mm(h, p + "ffn_up.weight")
        x = x + mm(g / (1.0 + np.exp(-g)) * u, p + "ffn_down.weight")
    x = _rmsnorm(x, m.w("output_norm.weight"), m.eps)
    return mm(x, None)


def logits(path: str, token_ids, act_q8: bool = False) -> np.ndarray:
    """float64 logits [n_tokens, n_vocab] for every position."""
    return forward(load(path), list(token_ids), act_q8)


def greedy(path: str, token_ids, n_new: int) -> list[int]:
    """Greedy continuation (recomputes the whole prefix per token: a reference, not fast)."""
    ids = list(token_ids)
    for _ in range(n_new):
        ids.append(int(np.argmax(logits(path, ids)[-1])))
    return ids[len(token_ids):]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="NumPy reference forward pass of a Llama GGUF")
    p.add_argument("model")
    p.add_argument("tokens", help="comma-separated token ids, e.g. 1,2,3")
    p.add_argument("--out", help="write float64 logits [n_tokens, n_vocab] to this .npy")
    p.add_argument("--greedy", type=int, default=0, help="also print N greedy next tokens")
    a = p.parse_args(argv)
    try:
        ids = [int(t) for t in a.tokens.split(",") if t.strip()]
        z = logits(a.model, ids)
    except (ValueError, KeyError) as e:
        print(f"ref_llama: {e}", file=sys.stderr)
        return 1
    if a.out:
        np.save(a.out, z)
    print(f"logits {z.shape[0]}x{z.shape[1]}, last argmax {int(np.argmax(z[-1]))}")
    if a.greedy:
        print("greedy:", ",".join(str(t) for t in greedy(a.model, ids, a.greedy)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
