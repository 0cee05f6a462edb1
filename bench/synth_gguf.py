#!/usr/bin/env python3
"""Synthetic Llama- and Qwen2-shaped GGUFs with random quantized weights, for
benchmarks of decode and prefill at real model sizes (bench/size_vs_llamacpp.sh).

    python3 bench/synth_gguf.py [--out DIR] [--list] [NAME ...]

NAME is SHAPE-TYPE, e.g. qwen2-0.5b-q4_0; with no NAME every file is written,
the two that other benchmarks need first (qwen2-0.5b-q4_0, qwen2-1.5b-q4_0).
Files go to ~/.cache/strata/synth/ (STRATA_CACHE overrides ~/.cache/strata;
never commit them). A file whose stored parameters (key synth.params) equal
the requested ones is kept, not rewritten. For every file the script prints
its size and its bytes per token: the bytes of weights one decoded token
reads (every matrix and vector of the layers, the output head, which is the
tied embedding, and one embedding row).

Shapes are the published ones of the models named (config.json of each):
  qwen2-0.5b  Qwen2.5-0.5B: 24 layers, dim 896, 14 heads / 2 KV heads of 64, FFN 4864
  qwen2-1.5b  Qwen2.5-1.5B: 28 layers, dim 1536, 12 / 2 heads of 128, FFN 8960
  qwen2-3b    Qwen2.5-3B:   36 layers, dim 2048, 16 / 2 heads of 128, FFN 11008
              (all three: vocab 151936, tied embedding, Q/K/V biases, rope base 1e6)
  llama-1b    Llama-3.2-1B: 16 layers, dim 2048, 32 / 8 heads of 64, FFN 8192
  llama-3b    Llama-3.2-3B: 28 layers, dim 3072, 24 / 8 heads of 128, FFN 8192
              (both: vocab 128256, tied embedding, rope base 5e5; the llama3
              rope frequency factors are left out: they change no cost)
Types: q4_0, q4_k, q8_0, every matrix including the embedding in that type
("pure"), norms and biases F32. A Q4_K matrix whose rows are not a multiple
of 256 (Qwen2.5-0.5B's dim 896) falls back to Q5_0, as llama-quantize does.

The tokenizer is SmolLM2-135M's byte-level BPE (tokens, types, merges,
specials; pre-tokenizer "smollm"), copied from its GGUF in the cache and
padded with unused tokens <|synth_pad_N|> to the shape's vocabulary, so
llama.cpp and strata both load it and the embedding keeps its real size.

Weights are random blocks with one fp16 scale per block chosen so that each
matrix entry has mean 0 and a standard deviation of GAIN/sqrt(row length):
a matrix then keeps the RMS of what it multiplies, and the residual stream
grows like sqrt(layers), with nothing systematic to add up (the one
quant value that would bias the mean is remapped to the block's zero).
The text such a model writes is noise; its cost per token is real.
"""
import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import gguf
from gguf import GGMLQuantizationType as QT

VERSION = 1          # bump when the bytes written for the same parameters change
GAIN = 0.5

SHAPES = {
    "qwen2-0.5b": dict(arch="qwen2", n_layer=24, dim=896, n_head=14, n_kv=2, head_dim=64,
                       ffn=4864, vocab=151936, ctx=32768, rope_base=1e6, eps=1e-6, bias=True),
    "qwen2-1.5b": dict(arch="qwen2", n_layer=28, dim=1536, n_head=12, n_kv=2, head_dim=128,
                       ffn=8960, vocab=151936, ctx=32768, rope_base=1e6, eps=1e-6, bias=True),
    "qwen2-3b": dict(arch="qwen2", n_layer=36, dim=2048, n_head=16, n_kv=2, head_dim=128,
                     ffn=11008, vocab=151936, ctx=32768, rope_base=1e6, eps=1e-6, bias=True),
    "llama-1b": dict(arch="llama", n_layer=16, dim=2048, n_head=32, n_kv=8, head_dim=64,
                     ffn=8192, vocab=128256, ctx=131072, rope_base=5e5, eps=1e-5, bias=False),
    "llama-3b": dict(arch="llama", n_layer=28, dim=3072, n_head=24, n_kv=8, head_dim=128,
                     ffn=8192, vocab=128256, ctx=131072, rope_base=5e5, eps=1e-5, bias=False),
}
TYPES = {"q4_0": (QT.Q4_0, 2), "q4_k": (QT.Q4_K, 14), "q8_0": (QT.Q8_0, 7)}   # (type, file_type)
# The two the cluster benchmark needs come first.
ORDER = ["qwen2-0.5b-q4_0", "qwen2-1.5b-q4_0"] + [
    f"{s}-{t}" for s in SHAPES for t in TYPES
    if f"{s}-{t}" not in ("qwen2-0.5b-q4_0", "qwen2-1.5b-q4_0")]

ROW_CHUNK_BYTES = 64 << 20


def cache_dir() -> Path:
    return Path(os.environ.get("STRATA_CACHE", Path.home() / ".cache" / "strata"))


# ---- random blocks ---------------------------------------------------------------

def _f16_bytes(x: float, n: int) -> np.ndarray:
    return np.frombuffer(np.full(n, x, dtype=np.float16).tobytes(), dtype=np.uint8).reshape(n, 2)


def _nibbles_zero_mean(b: np.ndarray) -> np.ndarray:
    """Random bytes -> bytes whose two 4-bit quants have mean 8 (the zero of
    Q4_0/Q4_K/Q5_0's low bits): the value 0 is replaced by 8, so the values are
    {8, 1..15}, whose mean is exactly 8."""
    lo, hi = b & 0x0F, b >> 4
    lo = np.where(lo == 0, 8, lo).astype(np.uint8)
    hi = np.where(hi == 0, 8, hi).astype(np.uint8)
    return lo | (hi << 4)


def blocks(rng: np.random.Generator, rows: int, cols: int, qt: QT) -> np.ndarray:
    """rows x (bytes of cols elements of qt) random blocks, uint8."""
    bs, tb = gguf.GGML_QUANT_SIZES[qt]
    nb = rows * cols // bs
    sigma = GAIN / np.sqrt(cols)
    if qt == QT.Q8_0:
        # int8 quants in -127..127 (-128 -> 0 keeps the mean at 0): std 73.9
        out = np.empty((nb, tb), dtype=np.uint8)
        q = np.frombuffer(rng.bytes(nb * 32), dtype=np.uint8).reshape(nb, 32)
        out[:, 2:] = np.where(q == 0x80, 0, q)
        out[:, :2] = _f16_bytes(sigma / 73.9, nb)
    elif qt == QT.Q4_0:
        # (q - 8) * d over {0, -7..7}: std 4.18
        out = np.empty((nb, tb), dtype=np.uint8)
        out[:, 2:] = _nibbles_zero_mean(np.frombuffer(rng.bytes(nb * 16), dtype=np.uint8)).reshape(nb, 16)
        out[:, :2] = _f16_bytes(sigma / 4.18, nb)
    elif qt == QT.Q5_0:
        # 5-bit q - 16: the low nibble is remapped as for Q4_0, so q is
        # {8|16, 1..15 (+16)} with mean 16; std about 9.2
        out = np.empty((nb, tb), dtype=np.uint8)
        out[:, 2:6] = np.frombuffer(rng.bytes(nb * 4), dtype=np.uint8).reshape(nb, 4)
        out[:, 6:] = _nibbles_zero_mean(np.frombuffer(rng.bytes(nb * 16), dtype=np.uint8)).reshape(nb, 16)
        out[:, :2] = _f16_bytes(sigma / 9.2, nb)
    elif qt == QT.Q4_K:
        # value = d*sc*q - dmin*m per 32-element sub-block; with m = sc and
        # dmin = 8d it is d*sc*(q - 8), zero mean; sc random in 32..63
        out = np.empty((nb, tb), dtype=np.uint8)
        sc = (32 + (np.frombuffer(rng.bytes(nb * 8), dtype=np.uint8) & 31)).reshape(nb, 8)
        m = sc
        s = out[:, 4:16]
        s[:, 0:4] = sc[:, 0:4] | ((sc[:, 4:8] >> 4) << 6)
        s[:, 4:8] = m[:, 0:4] | ((m[:, 4:8] >> 4) << 6)
        s[:, 8:12] = (sc[:, 4:8] & 0x0F) | ((m[:, 4:8] & 0x0F) << 4)
        out[:, 16:] = _nibbles_zero_mean(np.frombuffer(rng.bytes(nb * 128), dtype=np.uint8)).reshape(nb, 128)
        d = sigma / (47.5 * 4.18)
        out[:, 0:2] = _f16_bytes(d, nb)
        out[:, 2:4] = _f16_bytes(8 * d, nb)
    else:
        raise ValueError(f"synth_gguf: no generator for {qt.name}")
    return out.reshape(rows, cols // bs * tb)


# ---- the model -------------------------------------------------------------------

def matrix_type(qt: QT, cols: int) -> QT:
    bs = gguf.GGML_QUANT_SIZES[qt][0]
    if cols % bs == 0:
        return qt
    if qt == QT.Q4_K and cols % 32 == 0:
        return QT.Q5_0
    raise ValueError(f"synth_gguf: row of {cols} does not fit {qt.name}")


def tensor_list(h: dict, qt: QT):
    """(name, kind, rows, cols, type) in llama.cpp's converter order; kind is
    'mat', 'norm' or 'bias'; vectors have rows 1."""
    d, hd, ff = h["dim"], h["head_dim"], h["ffn"]
    q, kv = h["n_head"] * hd, h["n_kv"] * hd
    out = [("token_embd.weight", "mat", h["vocab"], d, matrix_type(qt, d))]
    for L in range(h["n_layer"]):
        b = f"blk.{L}."
        out.append((b + "attn_norm.weight", "norm", 1, d, QT.F32))
        for n, r in (("attn_q", q), ("attn_k", kv), ("attn_v", kv)):
            out.append((b + n + ".weight", "mat", r, d, matrix_type(qt, d)))
            if h["bias"]:
                out.append((b + n + ".bias", "bias", 1, r, QT.F32))
        out.append((b + "attn_output.weight", "mat", d, q, matrix_type(qt, q)))
        out.append((b + "ffn_norm.weight", "norm", 1, d, QT.F32))
        out.append((b + "ffn_gate.weight", "mat", ff, d, matrix_type(qt, d)))
        out.append((b + "ffn_up.weight", "mat", ff, d, matrix_type(qt, d)))
        out.append((b + "ffn_down.weight", "mat", d, ff, matrix_type(qt, ff)))
    out.append(("output_norm.weight", "norm", 1, d, QT.F32))
    return out


def nbytes(rows: int, cols: int, t: QT) -> int:
    bs, tb = gguf.GGML_QUANT_SIZES[t]
    return rows * cols // bs * tb


def bytes_per_token(tl) -> int:
    """Bytes of weights a decoded token reads: everything but the embedding,
    the embedding once more as the (tied) head, and one embedding row."""
    total = sum(nbytes(r, c, t) for _, _, r, c, t in tl)
    _, _, _, c, t = tl[0]
    return total + nbytes(1, c, t)


def params_of(name: str) -> dict:
    shape, typ = name.rsplit("-", 1)
    return dict(version=VERSION, shape=shape, type=typ, gain=GAIN, **SHAPES[shape])


def smollm_tokenizer(path: Path, vocab: int) -> list:
    """(key, value, type, sub-type) of SmolLM2's tokenizer, padded to vocab."""
    r = gguf.GGUFReader(str(path))
    f = r.fields
    toks = list(f["tokenizer.ggml.tokens"].contents())
    types = list(f["tokenizer.ggml.token_type"].contents())
    if vocab < len(toks):
        raise SystemExit(f"synth_gguf: vocab {vocab} below the tokenizer's {len(toks)}")
    pad = vocab - len(toks)
    toks += [f"<|synth_pad_{i}|>" for i in range(pad)]
    types += [int(gguf.TokenType.UNUSED)] * pad
    VT = gguf.GGUFValueType
    kv = [("tokenizer.ggml.model", f["tokenizer.ggml.model"].contents(), VT.STRING, None),
          ("tokenizer.ggml.pre", f["tokenizer.ggml.pre"].contents(), VT.STRING, None),
          ("tokenizer.ggml.tokens", toks, VT.ARRAY, VT.STRING),
          ("tokenizer.ggml.token_type", types, VT.ARRAY, VT.INT32),
          ("tokenizer.ggml.merges", list(f["tokenizer.ggml.merges"].contents()), VT.ARRAY, VT.STRING)]
    for k in ("bos_token_id", "eos_token_id", "unknown_token_id", "padding_token_id"):
        if "tokenizer.ggml." + k in f:
            kv.append(("tokenizer.ggml." + k, int(f["tokenizer.ggml." + k].contents()), VT.UINT32, None))
    for k in ("add_bos_token", "add_space_prefix"):
        if "tokenizer.ggml." + k in f:
            kv.append(("tokenizer.ggml." + k, bool(f["tokenizer.ggml." + k].contents()), VT.BOOL, None))
    return kv


def stored_params(path: Path):
    """The synth.params of a file written here, or None. Reads the key/value
    section only (GGUFReader would also parse every tensor's info)."""
    import mmap
    import struct
    sizes = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
    try:
        with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as b:
            if b[:4] != b"GGUF":
                return None
            n_kv = struct.unpack_from("<Q", b, 16)[0]
            o = 24

            def string(o):
                n = struct.unpack_from("<Q", b, o)[0]
                return bytes(b[o + 8:o + 8 + n]), o + 8 + n

            for _ in range(n_kv):
                key, o = string(o)
                vt = struct.unpack_from("<I", b, o)[0]
                o += 4
                if vt == 8:
                    val, o = string(o)
                    if key == b"synth.params":
                        return json.loads(val)
                elif vt == 9:
                    et, n = struct.unpack_from("<IQ", b, o)
                    o += 12
                    if et == 8:
                        for _ in range(n):
                            o += 8 + struct.unpack_from("<Q", b, o)[0]
                    else:
                        o += sizes[et] * n
                else:
                    o += sizes[vt]
    except (OSError, ValueError, KeyError, struct.error):   # truncated or foreign: rewritten
        return None
    return None


def write(name: str, out: Path, tok_src: Path) -> Path:
    p = params_of(name)
    h = SHAPES[p["shape"]]
    qt, ftype = TYPES[p["type"]]
    tl = tensor_list(h, qt)
    path = out / f"{name}.gguf"
    bpt = bytes_per_token(tl)
    n_param = sum(r * c for _, _, r, c, _ in tl)
    if path.exists() and stored_params(path) == p:
        print(f"{path}: kept ({path.stat().st_size / 1e6:.1f} MB, {n_param / 1e9:.2f} B parameters, "
              f"{bpt / 1e6:.1f} MB read per token)", flush=True)
        return path
    t0 = time.time()
    tmp = path.with_suffix(".gguf.tmp")
    w = gguf.GGUFWriter(str(tmp), h["arch"])
    w.add_type(gguf.GGUFType.MODEL)
    w.add_name(f"strata-synth-{name}")
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    w.add_block_count(h["n_layer"])
    w.add_context_length(h["ctx"])
    w.add_embedding_length(h["dim"])
    w.add_feed_forward_length(h["ffn"])
    w.add_head_count(h["n_head"])
    w.add_head_count_kv(h["n_kv"])
    w.add_rope_freq_base(h["rope_base"])
    w.add_layer_norm_rms_eps(h["eps"])
    w.add_file_type(ftype)
    if h["arch"] == "llama":
        w.add_vocab_size(h["vocab"])
        w.add_rope_dimension_count(h["head_dim"])
    if h["head_dim"] * h["n_head"] != h["dim"]:
        w.add_key_length(h["head_dim"])
        w.add_value_length(h["head_dim"])
    for k, v, vt, sub in smollm_tokenizer(tok_src, h["vocab"]):
        w.add_key_value(k, v, vt, sub)
    w.add_string("synth.params", json.dumps(p, sort_keys=True))
    for tname, kind, r, c, t in tl:
        if t == QT.F32:
            w.add_tensor_info(tname, (c,), np.dtype(np.float32), 4 * c)
        else:
            w.add_tensor_info(tname, (r, nbytes(1, c, t)), np.dtype(np.uint8), nbytes(r, c, t), raw_dtype=t)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    for i, (tname, kind, r, c, t) in enumerate(tl):
        rng = np.random.default_rng([VERSION, i, r, c])
        if kind == "norm":
            w.write_tensor_data(np.ones(c, dtype=np.float32))
        elif kind == "bias":
            w.write_tensor_data((0.02 * rng.standard_normal(c)).astype(np.float32))
        else:
            # whole rows at a time, ~64 MiB per chunk, appended to the file
            step = max(1, ROW_CHUNK_BYTES // nbytes(1, c, t))
            if step >= r:
                w.write_tensor_data(blocks(rng, r, c, t))
            else:
                _write_chunked(w, tname, rng, r, c, t, step)
    w.close()
    tmp.rename(path)
    print(f"{path}: written in {time.time() - t0:.0f} s ({path.stat().st_size / 1e6:.1f} MB, "
          f"{n_param / 1e9:.2f} B parameters, {bpt / 1e6:.1f} MB read per token)", flush=True)
    return path


def _write_chunked(w, tname, rng, r, c, t, step):
    """GGUFWriter.write_tensor_data writes one array per tensor; a large one
    is streamed here instead: its info popped, padding written, then its rows
    in chunks, so that no tensor is held whole in memory."""
    fout = w.fout[0]
    ti = w.tensors[0].pop(tname)
    assert ti.nbytes == nbytes(r, c, t)
    w.write_padding(fout, fout.tell())
    for r0 in range(0, r, step):
        blocks(rng, min(step, r - r0), c, t).tofile(fout)
    w.write_padding(fout, ti.nbytes)
    w.state = gguf.gguf_writer.WriterState.WEIGHTS


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("names", nargs="*", help=f"files to write (default: all, in order: {' '.join(ORDER)})")
    ap.add_argument("--out", type=Path, default=None, help="folder (default ~/.cache/strata/synth)")
    ap.add_argument("--tokenizer-from", type=Path, default=None,
                    help="GGUF whose tokenizer is copied (default the cached SmolLM2-135M-Instruct Q4_1)")
    ap.add_argument("--list", action="store_true", help="print names, parameters and bytes per token only")
    a = ap.parse_args()
    names = a.names or ORDER
    for n in names:
        if n not in ORDER:
            print(f"synth_gguf: unknown name '{n}' (known: {' '.join(ORDER)})", file=sys.stderr)
            return 2
    if a.list:
        for n in names:
            tl = tensor_list(SHAPES[n.rsplit("-", 1)[0]], TYPES[n.rsplit("-", 1)[1]][0])
            print(f"{n}: {sum(r * c for _, _, r, c, _ in tl) / 1e9:.2f} B parameters, "
                  f"{sum(nbytes(r, c, t) for _, _, r, c, t in tl) / 1e6:.1f} MB of tensors, "
                  f"{bytes_per_token(tl) / 1e6:.1f} MB read per token")
        return 0
    out = a.out or cache_dir() / "synth"
    out.mkdir(parents=True, exist_ok=True)
    tok = a.tokenizer_from or cache_dir() / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not tok.exists():
        print(f"synth_gguf: {tok} not found (scripts/fetch-model.sh fetches it)", file=sys.stderr)
        return 1
    for n in names:
        write(n, out, tok)
    return 0


if __name__ == "__main__":
    sys.exit(main())
