#!/usr/bin/env python3
"""Write a small random Llama GGUF file for tests.

    python3 tests/tools/gen_model.py out.gguf --n-layer 2 --dim 64 --n-head 4 \
        --n-head-kv 2 --n-ff 128 --dtype q8_0 --seed 1
    python3 tests/tools/gen_model.py out.gguf --tokenizer-from SmolLM2.gguf

Weights are seeded and deterministic: the same options give the same bytes.
Quantized types are packed here or by gguf.quants (gguf-py cannot quantize
Q6_K, so that one is packed with numpy below). The tokenizer is either copied
from another GGUF (every tokenizer.* key, byte for byte) or a tiny synthetic
byte-level BPE (gpt2 style) trained on a fixed text, so the result is usable
end to end.

As a module: `write_model(path, **options)` with the same option names.
"""
from __future__ import annotations

import argparse
import sys
from collections import Counter

import numpy as np

import gguf
from gguf import GGMLQuantizationType as QT
from gguf import GGUFValueType as VT

DTYPES = {
    "f32": QT.F32, "f16": QT.F16, "bf16": QT.BF16, "q8_0": QT.Q8_0,
    "q4_0": QT.Q4_0, "q4_1": QT.Q4_1, "q5_0": QT.Q5_0, "q5_1": QT.Q5_1, "q6_k": QT.Q6_K,
    "q2_k": QT.Q2_K, "q3_k": QT.Q3_K, "q4_k": QT.Q4_K, "q5_k": QT.Q5_K,
}
# gguf-py quantizes Q5_0/Q5_1 but not Q2_K..Q5_K (NotImplementedError): for
# those, random_kquant writes random blocks of about the matrix's scale
# (the float values asked for are not kept; gguf-py dequantizes them fine).
BLOCK = {"f32": 1, "f16": 1, "bf16": 1, "q8_0": 32, "q4_0": 32, "q4_1": 32, "q5_0": 32,
         "q5_1": 32, "q6_k": 256, "q2_k": 256, "q3_k": 256, "q4_k": 256, "q5_k": 256}
# bytes per block, offsets of the f16 super-block scale and min (-1: none),
# and the largest |value| the block's integers reach in units of that scale
KQUANT = {"q2_k": (84, 80, 82, 45.0), "q3_k": (110, 108, -1, 128.0),
          "q4_k": (144, 0, 2, 945.0), "q5_k": (176, 0, 2, 1953.0)}

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHATML = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + "
          "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}"
          "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
TRAIN_TEXT = (
    "The capital of France is Paris. The capital of Italy is Rome. What is the capital of "
    "Spain? Madrid is the capital of Spain. Hello world! This is a tiny test model for the "
    "strata inference cluster: it has random weights, a small vocabulary and a byte level "
    "tokenizer. Numbers like 12345 and 2024 are split into digits; punctuation, spaces and "
    "new lines\nare kept. The quick brown fox jumps over the lazy dog. "
)


# ---- quantization ------------------------------------------------------------

def quantize_q6_k(x: np.ndarray) -> np.ndarray:
    """Q6_K blocks of 256 values: {u8 ql[128]; u8 qh[64]; i8 scales[16]; f16 d}.
    Layout as ggml's dequantize_row_q6_K reads it; returns uint8 [rows, bytes]."""
    rows, cols = x.shape
    nb = rows * cols // 256
    v = x.reshape(nb, 16, 16).astype(np.float32)            # 16 sub-blocks of 16
    amax_idx = np.abs(v).argmax(axis=2)
    vmax = np.take_along_axis(v, amax_idx[..., None], axis=2)[..., 0]
    sub_scale = -vmax / 32.0                                 # maps the extreme to -32
    smax_idx = np.abs(sub_scale).argmax(axis=1)
    smax = np.take_along_axis(sub_scale, smax_idx[:, None], axis=1)[:, 0]
    d = np.where(smax != 0, -smax / 128.0, 0.0).astype(np.float16)
    d32 = d.astype(np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        sc = np.where(d32[:, None] != 0, np.round(sub_scale / d32[:, None]), 0)
    sc = np.clip(sc, -128, 127).astype(np.int8)
    step = d32[:, None] * sc.astype(np.float32)              # [nb, 16]
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.where(step[..., None] != 0, np.round(v / step[..., None]), 0)
    q = (np.clip(q, -32, 31) + 32).astype(np.uint8).reshape(nb, 2, 4, 32)   # [blk, half, k, l]
    lo, hi = q & 0xF, q >> 4
    ql = np.concatenate([lo[:, :, 0] | (lo[:, :, 2] << 4), lo[:, :, 1] | (lo[:, :, 3] << 4)],
                        axis=2).reshape(nb, 128)
    qh = (hi[:, :, 0] | (hi[:, :, 1] << 2) | (hi[:, :, 2] << 4) | (hi[:, :, 3] << 6)).reshape(nb, 64)
    blocks = np.concatenate([ql, qh, sc.view(np.uint8), d.view(np.uint8).reshape(nb, 2)], axis=1)
    return blocks.reshape(rows, cols // 256 * 210)


def random_kquant(x: np.ndarray, dtype: str) -> np.ndarray:
    """Random Q2_K..Q5_K blocks for a [rows, cols] matrix: random quants and
    sub-block scales, the super-block scale (and min) chosen so that values
    stay within a few times x's standard deviation. Seeded from x, so the
    same x gives the same blocks."""
    bb, d_off, m_off, span = KQUANT[dtype]
    rows, cols = x.shape
    nb = rows * (cols // 256)
    rng = np.random.default_rng(int(np.abs(x).sum() * 1e6) % (2 ** 32))
    blk = rng.integers(0, 256, size=(nb, bb), dtype=np.uint8)
    d = np.full(nb, 3.0 * float(x.std() or 1.0) / span, dtype=np.float16)
    blk[:, d_off:d_off + 2] = d.view(np.uint8).reshape(nb, 2)
    if m_off >= 0:
        blk[:, m_off:m_off + 2] = d.view(np.uint8).reshape(nb, 2)
    return blk.reshape(rows, cols // 256 * bb)


def encode(x: np.ndarray, dtype: str) -> tuple[np.ndarray, QT]:
    """Returns (array for GGUFWriter.add_tensor, raw dtype) for a [rows, cols] float matrix."""
    qt = DTYPES[dtype]
    x = np.ascontiguousarray(x, dtype=np.float32)
    if dtype == "f32":
        return x, qt
    if dtype == "f16":
        return x.astype(np.float16), qt
    if dtype == "q6_k":
        return quantize_q6_k(x), qt
    if dtype in KQUANT:
        return random_kquant(x, dtype), qt
    return gguf.quants.quantize(x, qt), qt


# ---- tokenizer ---------------------------------------------------------------

def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def synthetic_tokenizer(n_vocab: int) -> dict:
    """A byte-level BPE trained on TRAIN_TEXT: 256 byte tokens, merges, then
    the ChatML specials at the end. n_vocab >= 256 + len(SPECIALS)."""
    if n_vocab < 256 + len(SPECIALS):
        raise SystemExit(f"gen_model: --vocab {n_vocab} is below {256 + len(SPECIALS)} "
                         "(256 byte tokens + specials)")
    b2u = bytes_to_unicode()
    tokens = [b2u[b] for b in range(256)]
    words = [[b2u[b] for b in w.encode()] for w in
             __import__("re").findall(r" ?[A-Za-z]+| ?[0-9]| ?[^\sA-Za-z0-9]+|\s+", TRAIN_TEXT)]
    merges: list[str] = []
    known = set(tokens)
    while len(tokens) < n_vocab - len(SPECIALS):
        pairs = Counter((w[i], w[i + 1]) for w in words for i in range(len(w) - 1))
        pairs = {p: c for p, c in pairs.items() if p[0] + p[1] not in known}
        if not pairs:
            # The text is exhausted: pad with unreachable filler tokens.
            tokens.append(f"<filler_{len(tokens)}>")
            continue
        a, b = max(sorted(pairs), key=lambda p: pairs[p])    # deterministic tie break
        merges.append(f"{a} {b}")
        tokens.append(a + b)
        known.add(a + b)
        for w in words:
            i = 0
            while i < len(w) - 1:
                if w[i] == a and w[i + 1] == b:
                    w[i:i + 2] = [a + b]
                i += 1
    tokens += SPECIALS
    types = [1] * (len(tokens) - len(SPECIALS)) + [3] * len(SPECIALS)
    n = len(tokens)
    return {
        "tokenizer.ggml.model": ("gpt2", VT.STRING, None),
        "tokenizer.ggml.pre": ("default", VT.STRING, None),
        "tokenizer.ggml.tokens": (tokens, VT.ARRAY, VT.STRING),
        "tokenizer.ggml.token_type": (types, VT.ARRAY, VT.INT32),
        "tokenizer.ggml.merges": (merges, VT.ARRAY, VT.STRING),
        "tokenizer.ggml.bos_token_id": (n - 3, VT.UINT32, None),
        "tokenizer.ggml.eos_token_id": (n - 1, VT.UINT32, None),
        "tokenizer.ggml.padding_token_id": (n - 3, VT.UINT32, None),
        "tokenizer.ggml.add_bos_token": (False, VT.BOOL, None),
        "tokenizer.chat_template": (CHATML, VT.STRING, None),
    }


def copied_tokenizer(path: str) -> dict:
    """Every tokenizer.* key of another GGUF, values copied as raw bytes."""
    r = gguf.GGUFReader(path)
    out = {}
    for key, f in r.fields.items():
        if not key.startswith("tokenizer."):
            continue
        main = VT(f.types[0])
        if main == VT.ARRAY:
            sub = VT(f.types[-1])
            if len(f.types) != 2:
                raise SystemExit(f"gen_model: {path}: nested array '{key}' cannot be copied")
            if sub == VT.STRING:
                val = [bytes(f.parts[i]) for i in f.data]
            else:
                val = [f.parts[i].tolist()[0] for i in f.data]
            out[key] = (val, VT.ARRAY, sub)
        elif main == VT.STRING:
            out[key] = (bytes(f.parts[-1]), VT.STRING, None)
        else:
            out[key] = (f.parts[-1].tolist()[0], main, None)
    if "tokenizer.ggml.tokens" not in out:
        raise SystemExit(f"gen_model: {path} has no tokenizer.ggml.tokens")
    return out


# ---- model -------------------------------------------------------------------

def write_model(path: str, n_layer: int = 2, dim: int = 64, n_head: int = 4,
                n_head_kv: int | None = None, n_ff: int = 128, vocab: int = 288,
                ctx: int = 256, dtype: str = "q8_0", embd_dtype: str | None = None,
                separate_output: bool = False, rope_base: float = 10000.0,
                rope_dim: int | None = None, rope_scale: float | None = None,
                rms_eps: float = 1e-5, tokenizer_from: str | None = None,
                tokenizer: dict | None = None,
                name: str = "strata-test-llama", seed: int = 0) -> str:
    n_head_kv = n_head if n_head_kv is None else n_head_kv
    embd_dtype = embd_dtype or dtype
    if dim % n_head or n_head % n_head_kv:
        raise SystemExit(f"gen_model: dim {dim}, n_head {n_head}, n_head_kv {n_head_kv}: "
                         "heads must divide dim and n_head_kv must divide n_head")
    head_dim = dim // n_head
    rope_dim = head_dim if rope_dim is None else rope_dim
    for what, n in (("dim", dim), ("n_ff", n_ff)):
        for dt in {dtype, embd_dtype}:
            if n % BLOCK[dt]:
                raise SystemExit(f"gen_model: {what} {n} is not a multiple of the {dt} block "
                                 f"size {BLOCK[dt]}")

    # `tokenizer` (module use only): tokenizer.* keys as {key: (value, type,
    # array element type)}, for tests that need a vocabulary of their own.
    if tokenizer is not None:
        tok = tokenizer
    else:
        tok = copied_tokenizer(tokenizer_from) if tokenizer_from else synthetic_tokenizer(vocab)
    n_vocab = len(tok["tokenizer.ggml.tokens"][0])
    rng = np.random.default_rng(seed)

    w = gguf.GGUFWriter(path, "llama")
    w.add_name(name)
    w.add_context_length(ctx)
    w.add_embedding_length(dim)
    w.add_block_count(n_layer)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_head_kv)
    w.add_rope_dimension_count(rope_dim)
    w.add_rope_freq_base(rope_base)
    w.add_layer_norm_rms_eps(rms_eps)
    w.add_vocab_size(n_vocab)
    if rope_scale is not None:
        w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(rope_scale)
    w.add_file_type(int(DTYPES[dtype]))
    for key, (val, vtype, sub) in tok.items():
        w.add_key_value(key, val, vtype, sub)

    def mat(rows: int, cols: int, scale: float) -> np.ndarray:
        return (rng.standard_normal((rows, cols)) * scale).astype(np.float32)

    def norm(n: int) -> np.ndarray:
        return (1.0 + 0.1 * rng.standard_normal(n)).astype(np.float32)

    def add(name_: str, x: np.ndarray, dt: str) -> None:
        data, qt = encode(x, dt)
        w.add_tensor(name_, data, raw_dtype=qt)

    add("token_embd.weight", mat(n_vocab, dim, 1.0), embd_dtype)
    add("output_norm.weight", norm(dim), "f32")
    if separate_output:
        add("output.weight", mat(n_vocab, dim, dim ** -0.5), embd_dtype)
    q_dim, kv_dim = n_head * head_dim, n_head_kv * head_dim
    for i in range(n_layer):
        add(f"blk.{i}.attn_norm.weight", norm(dim), "f32")
        add(f"blk.{i}.attn_q.weight", mat(q_dim, dim, dim ** -0.5), dtype)
        add(f"blk.{i}.attn_k.weight", mat(kv_dim, dim, dim ** -0.5), dtype)
        add(f"blk.{i}.attn_v.weight", mat(kv_dim, dim, dim ** -0.5), dtype)
        add(f"blk.{i}.attn_output.weight", mat(dim, q_dim, q_dim ** -0.5), dtype)
        add(f"blk.{i}.ffn_norm.weight", norm(dim), "f32")
        add(f"blk.{i}.ffn_gate.weight", mat(n_ff, dim, dim ** -0.5), dtype)
        add(f"blk.{i}.ffn_up.weight", mat(n_ff, dim, dim ** -0.5), dtype)
        add(f"blk.{i}.ffn_down.weight", mat(dim, n_ff, n_ff ** -0.5), dtype)

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("out")
    p.add_argument("--n-layer", type=int, default=2)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--n-head", type=int, default=4)
    p.add_argument("--n-head-kv", type=int, default=None, help="default: --n-head")
    p.add_argument("--n-ff", type=int, default=128)
    p.add_argument("--vocab", type=int, default=288, help="synthetic tokenizer size")
    p.add_argument("--ctx", type=int, default=256, help="llama.context_length")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="q8_0", help="layer weights")
    p.add_argument("--embd-dtype", choices=sorted(DTYPES), default=None,
                   help="token embedding and output (default: --dtype)")
    p.add_argument("--separate-output", action="store_true", help="write output.weight (else tied)")
    p.add_argument("--rope-base", type=float, default=10000.0)
    p.add_argument("--rope-dim", type=int, default=None, help="default: head dim")
    p.add_argument("--rope-scale", type=float, default=None, help="linear rope scaling factor")
    p.add_argument("--rms-eps", type=float, default=1e-5)
    p.add_argument("--tokenizer-from", default=None, help="copy tokenizer.* keys from this GGUF")
    p.add_argument("--name", default="strata-test-llama")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    write_model(a.out, n_layer=a.n_layer, dim=a.dim, n_head=a.n_head, n_head_kv=a.n_head_kv,
                n_ff=a.n_ff, vocab=a.vocab, ctx=a.ctx, dtype=a.dtype, embd_dtype=a.embd_dtype,
                separate_output=a.separate_output, rope_base=a.rope_base, rope_dim=a.rope_dim,
                rope_scale=a.rope_scale, rms_eps=a.rms_eps, tokenizer_from=a.tokenizer_from,
                name=a.name, seed=a.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
