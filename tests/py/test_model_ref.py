"""The NumPy reference forward pass (tests/tools/ref_llama.py): properties that
must hold whatever the weights (shape, causality, GQA = MHA with repeated
K/V heads, RoPE at position 0 is the identity), one step checked against a
plain per-head loop, its CLI, and the real model answering the capital of
France when greedy-decoded."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "tools"))
import gen_model  # noqa: E402
import ref_llama  # noqa: E402

MODEL = os.environ.get("STRATA_MODEL", "/root/.cache/strata/SmolLM2-135M-Instruct.Q4_1.gguf")

# "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
# tokenized with HF `tokenizers` (BPE built from the GGUF's vocab and merges,
# digits split + byte-level pre-tokenizer, special tokens of type 3).
PARIS_PROMPT = [1, 4093, 198, 1780, 314, 260, 3575, 282, 4649, 47, 2, 198, 1, 520, 9531, 198]
# Greedy continuation seen with this reference: "The capital of France is Paris.<|im_end|>"
PARIS_ANSWER = [504, 3575, 282, 4649, 314, 7042, 30, 2]
PARIS_TOKEN = 7042     # " Paris"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    f = tmp_path_factory.mktemp("ref") / "tiny.gguf"
    gen_model.write_model(str(f), n_layer=2, dim=64, n_head=4, n_head_kv=2, n_ff=96,
                          vocab=300, dtype="f32", rope_base=10000.0, seed=11)
    return str(f)


def test_shape_and_causality(tiny):
    ids = [5, 77, 3, 250, 9, 1]
    z = ref_llama.logits(tiny, ids)
    assert z.shape == (6, 300) and z.dtype == np.float64 and np.isfinite(z).all()
    # logits at position i depend only on tokens 0..i
    z3 = ref_llama.logits(tiny, ids[:3])
    assert np.allclose(z[:3], z3, atol=1e-12)
    z_changed = ref_llama.logits(tiny, ids[:3] + [100, 9, 1])
    assert np.allclose(z[:3], z_changed[:3], atol=1e-12)
    assert not np.allclose(z[3:], z_changed[3:])


def _loop_forward(m: ref_llama.RefModel, ids):
    """The same model written as explicit per-position, per-head loops."""
    n, hd = len(ids), m.head_dim
    x = m.tok_embd[ids].astype(np.float64)

    def norm(v, w):
        return v / np.sqrt((v * v).mean() + m.eps) * w

    def rope(v, pos):
        v = v.copy()
        for i in range(m.rope_dim // 2):
            th = pos * m.freq_scale * m.rope_base ** (-2.0 * i / m.rope_dim)
            a, b = v[2 * i], v[2 * i + 1]
            v[2 * i], v[2 * i + 1] = a * np.cos(th) - b * np.sin(th), a * np.sin(th) + b * np.cos(th)
        return v

    for L in range(m.n_layer):
        W = {k: m.w(f"blk.{L}.{k}.weight").astype(np.float64) for k in (
            "attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm",
            "ffn_gate", "ffn_up", "ffn_down")}
        ks, vs, out = [], [], np.zeros_like(x)
        for t in range(n):
            h = norm(x[t], W["attn_norm"])
            q = W["attn_q"] @ h
            k = W["attn_k"] @ h
            v = W["attn_v"] @ h
            ks.append(np.concatenate([rope(k[j * hd:(j + 1) * hd], t) for j in range(m.n_head_kv)]))
            vs.append(v)
            heads = []
            for j in range(m.n_head):
                g = j // (m.n_head // m.n_head_kv)
                qj = rope(q[j * hd:(j + 1) * hd], t)
                sc = np.array([qj @ ks[s][g * hd:(g + 1) * hd] for s in range(t + 1)]) / np.sqrt(hd)
                p = np.exp(sc - sc.max())
                p /= p.sum()
                heads.append(sum(p[s] * vs[s][g * hd:(g + 1) * hd] for s in range(t + 1)))
            out[t] = W["attn_output"] @ np.concatenate(heads)
        x = x + out
        for t in range(n):
            h = norm(x[t], W["ffn_norm"])
            gg, uu = W["ffn_gate"] @ h, W["ffn_up"] @ h
            x[t] = x[t] + W["ffn_down"] @ (gg / (1 + np.exp(-gg)) * uu)
    return np.stack([m.output.astype(np.float64) @ norm(x[t], m.w("output_norm.weight"))
                     for t in range(n)])


def test_matches_loop_implementation(tiny):
    ids = [4, 200, 17, 33, 8]
    m = ref_llama.load(tiny)
    assert np.allclose(ref_llama.logits(tiny, ids), _loop_forward(m, ids), rtol=1e-9, atol=1e-9)


def test_gqa_equals_repeated_heads(tmp_path):
    """A GQA model equals the MHA model whose K/V heads are repeated."""
    src = tmp_path / "gqa.gguf"
    gen_model.write_model(str(src), n_layer=1, dim=64, n_head=4, n_head_kv=2, n_ff=64,
                          dtype="f32", seed=2)
    m = ref_llama.load(str(src))
    ids = [1, 2, 3, 4]
    z = ref_llama.logits(str(src), ids)
    hd = m.head_dim
    for name in ("blk.0.attn_k.weight", "blk.0.attn_v.weight"):
        w = m.w(name)                                        # [n_kv * hd, dim]
        m._cache[name] = np.repeat(w.reshape(2, hd, -1), 2, axis=0).reshape(4 * hd, -1)
    m.n_head_kv = 4
    assert np.allclose(ref_llama.forward(m, ids), z, atol=1e-10)
    ref_llama.load.cache_clear()


def test_cli(tiny, tmp_path):
    out = tmp_path / "z.npy"
    p = subprocess.run([sys.executable, str(ROOT / "tests/tools/ref_llama.py"), tiny, "1,2,3",
                        "--out", str(out), "--greedy", "2"], capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stderr
    z = np.load(out)
    assert z.shape == (3, 300)
    assert np.allclose(z, ref_llama.logits(tiny, [1, 2, 3]))
    assert "greedy:" in p.stdout
    bad = subprocess.run([sys.executable, str(ROOT / "tests/tools/ref_llama.py"), tiny, "1,999"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and "token id outside" in bad.stderr


def test_real_model_says_paris():
    if not os.path.exists(MODEL):
        pytest.skip(f"model {MODEL} not present (set STRATA_MODEL)")
    if "SmolLM2-135M-Instruct" not in MODEL:
        pytest.skip("the prompt's token ids are SmolLM2's")
    out = ref_llama.greedy(MODEL, PARIS_PROMPT, 6)
    assert PARIS_TOKEN in out, out
    assert out == PARIS_ANSWER[:6]
