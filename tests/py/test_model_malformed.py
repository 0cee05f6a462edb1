"""`strata info` on malformed GGUF files: each is refused with exit status 1,
one line on stderr naming the file and the offending field, no crash, fast.

The cases cover the published advisories against other GGUF loaders (tensor
dims whose product wraps, out-of-range token-type / byte-token indexes,
tensor data past the end of the file, huge string lengths, huge array
counts) and the rest of the reader's checks. Files are built byte by byte
here from a valid tiny Llama, so each case changes exactly one thing.

Running this file as a script rewrites the committed corpora:
    python3 tests/py/test_model_malformed.py --write-corpus
(tests/data/malformed/*.bin, replayed by the C unit test
model_test_gguf_corpus, and the seeds in fuzz/corpus/gguf/). They are named
.bin because .gitignore ignores *.gguf.
"""
from __future__ import annotations

import os
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STRATA = os.environ.get("STRATA_BIN", str(ROOT / "build" / "bin" / "strata"))

U8, I8, U16, I16, U32, I32, F32, BOOL, STR, ARR, U64, I64, F64 = range(13)
T_F32, T_F16, T_Q4_0, T_Q8_0 = 0, 1, 2, 8


def gstr(b: bytes | str) -> bytes:
    if isinstance(b, str):
        b = b.encode()
    return struct.pack("<Q", len(b)) + b


class G:
    """A GGUF file as editable parts: kvs (key, type, value bytes) and
    tensors (dicts), serialized by build()."""

    def __init__(self):
        self.magic, self.version, self.align = b"GGUF", 3, 32
        self.kvs: list[tuple[bytes, int, bytes]] = []
        self.tensors: list[dict] = []
        self.n_kv = self.n_tensors = None      # overrides of the header counts
        self.data_bytes = None                 # override of the data section size
        self.trunc = None

    def kv(self, key, t, val: bytes):
        self.kvs.append((key.encode() if isinstance(key, str) else key, t, val))

    def kv_u32(self, k, v): self.kv(k, U32, struct.pack("<I", v))
    def kv_f32(self, k, v): self.kv(k, F32, struct.pack("<f", v))
    def kv_str(self, k, v): self.kv(k, STR, gstr(v))

    def kv_arr_str(self, k, vals):
        self.kv(k, ARR, struct.pack("<IQ", STR, len(vals)) + b"".join(gstr(v) for v in vals))

    def kv_arr_i32(self, k, vals):
        self.kv(k, ARR, struct.pack("<IQ", I32, len(vals)) + struct.pack(f"<{len(vals)}i", *vals))

    def tensor(self, name, ne, t=T_F32):
        size = {T_F32: 4, T_F16: 2}[t]
        nbytes = size
        for n in ne:
            nbytes *= n
        off = 0
        if self.tensors:
            last = self.tensors[-1]
            off = (last["offset"] + last["nbytes"] + self.align - 1) // self.align * self.align
        self.tensors.append(dict(name=name, ne=list(ne), type=t, offset=off, nbytes=nbytes))

    def find(self, name) -> dict:
        return next(t for t in self.tensors if t["name"] == name)

    def build(self) -> bytes:
        out = bytearray(self.magic + struct.pack("<I", self.version))
        out += struct.pack("<QQ", len(self.tensors) if self.n_tensors is None else self.n_tensors,
                           len(self.kvs) if self.n_kv is None else self.n_kv)
        for k, t, v in self.kvs:
            out += gstr(k) + struct.pack("<I", t) + v
        for t in self.tensors:
            out += gstr(t["name"]) + struct.pack("<I", len(t["ne"]))
            out += b"".join(struct.pack("<Q", n) for n in t["ne"])
            out += struct.pack("<IQ", t["type"], t["offset"])
        out += b"\0" * (-len(out) % self.align)
        if self.data_bytes is not None:
            size = self.data_bytes
        else:
            size = max([t["offset"] + t["nbytes"] for t in self.tensors if t["offset"] < 1 << 30]
                       + [0])
        out += bytes((i * 7 + 3) & 0x7f for i in range(size))   # f32 of these bytes are finite
        return bytes(out[: self.trunc] if self.trunc is not None else out)


TOKENS = ["<unk>", "<s>", "</s>", "a", "b", "c", "<0x41>", "d"]
TYPES = [2, 3, 3, 1, 1, 1, 6, 1]


def tiny_llama(skip_tensor=None, arch="llama", head_count_kv=1) -> G:
    """A valid Llama: 1 layer, dim 32, 2 heads (1 kv), ff 32, vocab 8; f16
    matrices and f32 norms, about 13 KB."""
    g = G()
    g.kv_str("general.architecture", arch)
    g.kv_str("general.name", "malformed-base")
    a = arch + "."
    for k, v in (("block_count", 1), ("embedding_length", 32), ("feed_forward_length", 32),
                 ("attention.head_count", 2), ("attention.head_count_kv", head_count_kv),
                 ("context_length", 128)):
        g.kv_u32(a + k, v)
    g.kv_f32(a + "attention.layer_norm_rms_epsilon", 1e-5)
    g.kv_str("tokenizer.ggml.model", "llama")
    g.kv_arr_str("tokenizer.ggml.tokens", TOKENS)
    g.kv_arr_i32("tokenizer.ggml.token_type", TYPES)
    g.kv_u32("tokenizer.ggml.bos_token_id", 1)
    g.kv_u32("tokenizer.ggml.eos_token_id", 2)
    shapes = [("token_embd.weight", [32, 8]), ("output_norm.weight", [32]),
              ("blk.0.attn_norm.weight", [32]), ("blk.0.attn_q.weight", [32, 32]),
              ("blk.0.attn_k.weight", [32, 16]), ("blk.0.attn_v.weight", [32, 16]),
              ("blk.0.attn_output.weight", [32, 32]), ("blk.0.ffn_norm.weight", [32]),
              ("blk.0.ffn_gate.weight", [32, 32]), ("blk.0.ffn_up.weight", [32, 32]),
              ("blk.0.ffn_down.weight", [32, 32])]
    for name, ne in shapes:
        if name != skip_tensor:
            g.tensor(name, ne, T_F32 if len(ne) == 1 else T_F16)
    return g


def tiny_arch(arch: str) -> G:
    """Valid tiny files of the other families, for the fuzz seeds: gemma3
    (Q/K norms, post-norms, a sliding window) and deepseek2 (MLA, one dense
    and one MoE layer with a shared expert and the V3 selection bias), dim
    32, vocab 8, f16 matrices."""
    g = G()
    g.kv_str("general.architecture", arch)
    g.kv_str("general.name", f"fuzz-seed-{arch}")
    a = arch + "."
    n_layer = 2 if arch == "deepseek2" else 1
    keys = [("block_count", n_layer), ("embedding_length", 32), ("feed_forward_length", 32),
            ("attention.head_count", 2), ("context_length", 128)]
    if arch == "gemma3":
        keys += [("attention.head_count_kv", 1), ("attention.key_length", 16),
                 ("attention.value_length", 16), ("attention.sliding_window", 8)]
    else:
        keys += [("attention.head_count_kv", 1), ("attention.kv_lora_rank", 16),
                 ("attention.key_length", 24), ("attention.value_length", 16),
                 ("attention.key_length_mla", 16), ("attention.value_length_mla", 8),
                 ("rope.dimension_count", 8), ("leading_dense_block_count", 1),
                 ("expert_count", 4), ("expert_used_count", 2), ("expert_shared_count", 1),
                 ("expert_feed_forward_length", 16), ("expert_gating_func", 2)]
    for k, v in keys:
        g.kv_u32(a + k, v)
    g.kv_f32(a + "attention.layer_norm_rms_epsilon", 1e-6)
    if arch == "deepseek2":
        g.kv_f32(a + "expert_weights_scale", 2.5)
    g.kv_str("tokenizer.ggml.model", "llama")
    g.kv_arr_str("tokenizer.ggml.tokens", TOKENS)
    g.kv_arr_i32("tokenizer.ggml.token_type", TYPES)
    g.kv_u32("tokenizer.ggml.bos_token_id", 1)
    g.kv_u32("tokenizer.ggml.eos_token_id", 2)
    shapes = [("token_embd.weight", [32, 8]), ("output_norm.weight", [32])]
    for i in range(n_layer):
        b = f"blk.{i}."
        shapes.append((b + "attn_norm.weight", [32]))
        if arch == "gemma3":
            shapes += [(b + "attn_q.weight", [32, 32]), (b + "attn_k.weight", [32, 16]),
                       (b + "attn_v.weight", [32, 16]), (b + "attn_q_norm.weight", [16]),
                       (b + "attn_k_norm.weight", [16]), (b + "attn_output.weight", [32, 32]),
                       (b + "post_attention_norm.weight", [32]), (b + "post_ffw_norm.weight", [32])]
        else:
            shapes += [(b + "attn_q.weight", [32, 32]), (b + "attn_kv_a_mqa.weight", [32, 24]),
                       (b + "attn_kv_a_norm.weight", [16]), (b + "attn_k_b.weight", [8, 16, 2]),
                       (b + "attn_v_b.weight", [16, 8, 2]), (b + "attn_output.weight", [16, 32])]
        shapes.append((b + "ffn_norm.weight", [32]))
        if arch == "deepseek2" and i >= 1:
            shapes += [(b + "ffn_gate_inp.weight", [32, 4]), (b + "exp_probs_b.bias", [4]),
                       (b + "ffn_gate_exps.weight", [32, 16, 4]),
                       (b + "ffn_up_exps.weight", [32, 16, 4]),
                       (b + "ffn_down_exps.weight", [16, 32, 4]),
                       (b + "ffn_gate_shexp.weight", [32, 16]),
                       (b + "ffn_up_shexp.weight", [32, 16]),
                       (b + "ffn_down_shexp.weight", [16, 32])]
        else:
            shapes += [(b + "ffn_gate.weight", [32, 32]), (b + "ffn_up.weight", [32, 32]),
                       (b + "ffn_down.weight", [32, 32])]
    for name, ne in shapes:
        g.tensor(name, ne, T_F32 if len(ne) == 1 else T_F16)
    return g


def replace_kv(g: G, key: str, t: int, val: bytes) -> G:
    g.kvs = [(k, t, val) if k == key.encode() else (k, kt, v) for k, kt, v in g.kvs]
    return g


def edit(g: G, fn) -> G:
    fn(g)
    return g


def arr_i32(vals):
    return struct.pack("<IQ", I32, len(vals)) + struct.pack(f"<{len(vals)}i", *vals)


def _overlap(g):
    g.find("blk.0.attn_k.weight")["offset"] = g.find("blk.0.attn_q.weight")["offset"] + 32


def _truncate_infos(g):
    """Cuts the file inside the last tensor info (the padding is < 32 bytes)."""
    g.data_bytes = 0
    g.trunc = len(g.build()) - 45
    g.data_bytes = None


def _nine_tokens(g):
    replace_kv(g, "tokenizer.ggml.tokens", ARR,
               struct.pack("<IQ", STR, 9) + b"".join(gstr(t) for t in TOKENS + ["e"]))
    replace_kv(g, "tokenizer.ggml.token_type", ARR, arr_i32(TYPES + [1]))


def _nested_deep(g):
    v = b"".join(struct.pack("<IQ", ARR, 1) for _ in range(40)) + struct.pack("<IQ", U8, 0)
    g.kv("x.deep", ARR, v)


# name -> (file bytes, substrings the error must contain)
def cases() -> dict[str, tuple[bytes, list[str]]]:
    c = {}

    def add(name, g_or_bytes, *needles):
        c[name] = (g_or_bytes if isinstance(g_or_bytes, bytes) else g_or_bytes.build(), list(needles))

    # -- advisories against other loaders --
    add("dims_product_wraps", edit(tiny_llama(), lambda g: g.find("blk.0.attn_q.weight").update(
        ne=[1 << 32, 1 << 32])), "tensor 'blk.0.attn_q.weight'", "overflow")
    add("dims_product_wraps_4d", edit(tiny_llama(), lambda g: g.find("blk.0.ffn_up.weight").update(
        ne=[32, 1 << 21, 1 << 21, 1 << 21])), "tensor 'blk.0.ffn_up.weight'", "overflow")
    add("token_type_out_of_range", replace_kv(tiny_llama(), "tokenizer.ggml.token_type", ARR,
        arr_i32([2, 3, 3, 1, 1, 1, 6, 99])), "tokenizer.ggml.token_type", "type 99")
    add("token_type_negative", replace_kv(tiny_llama(), "tokenizer.ggml.token_type", ARR,
        arr_i32([2, 3, 3, -7, 1, 1, 6, 1])), "tokenizer.ggml.token_type", "type -7")
    add("byte_token_not_hex", replace_kv(tiny_llama(), "tokenizer.ggml.tokens", ARR,
        struct.pack("<IQ", STR, 8) + b"".join(gstr(t) for t in TOKENS[:6] + ["<0xZZ>", "d"])),
        "tokenizer.ggml.tokens", "byte token 6")
    add("token_type_count_mismatch", replace_kv(tiny_llama(), "tokenizer.ggml.token_type", ARR,
        arr_i32([1] * 5)), "tokenizer.ggml.token_type", "5 entries")
    add("bos_id_out_of_range", replace_kv(tiny_llama(), "tokenizer.ggml.bos_token_id", U32,
        struct.pack("<I", 4000)), "tokenizer.ggml.bos_token_id", "4000")
    add("tensor_data_past_eof", edit(tiny_llama(), lambda g: setattr(g, "data_bytes", 64)),
        "tensor '", "past the end")
    add("tensor_offset_huge", edit(tiny_llama(), lambda g: g.find("blk.0.ffn_down.weight").update(
        offset=(1 << 64) - 32)), "tensor 'blk.0.ffn_down.weight'", "past the end")
    add("huge_key_length", b"GGUF" + struct.pack("<IQQQ", 3, 0, 1, 1 << 63) + b"\0" * 16,
        "key #0 name", "string length 9223372036854775808")
    add("huge_string_value", replace_kv(tiny_llama(), "general.name", STR,
        struct.pack("<Q", (1 << 64) - 1)), "key 'general.name'", "string length 18446744073709551615")
    add("huge_array_count", replace_kv(tiny_llama(), "tokenizer.ggml.tokens", ARR,
        struct.pack("<IQ", STR, 1 << 60)), "tokenizer.ggml.tokens", "array count 1152921504606846976")
    add("huge_numeric_array_count", replace_kv(tiny_llama(), "tokenizer.ggml.token_type", ARR,
        struct.pack("<IQ", I32, (1 << 64) - 1)), "tokenizer.ggml.token_type",
        "array count 18446744073709551615")
    add("huge_kv_count", edit(tiny_llama(), lambda g: setattr(g, "n_kv", 1 << 62)),
        "kv count 4611686018427387904")
    add("huge_tensor_count", edit(tiny_llama(), lambda g: setattr(g, "n_tensors", 1 << 40)),
        "tensor count 1099511627776")
    # -- the rest of the reader's checks --
    add("bad_magic", edit(tiny_llama(), lambda g: setattr(g, "magic", b"GGML")), "bad magic")
    add("version_1", edit(tiny_llama(), lambda g: setattr(g, "version", 1)), "version 1")
    add("version_big_endian", edit(tiny_llama(), lambda g: setattr(g, "version", 3 << 24)),
        "version 50331648")
    add("empty_file", b"", "header")
    add("truncated_tensor_infos", edit(tiny_llama(), _truncate_infos), "tensor 'blk.0.ffn_down.weight'")
    add("unknown_value_type", edit(tiny_llama(), lambda g: g.kv("x.bad", 42, b"\0" * 8)),
        "key 'x.bad'", "unknown value type 42")
    add("bool_not_0_or_1", edit(tiny_llama(), lambda g: g.kv("x.flag", BOOL, b"\x05")),
        "key 'x.flag'", "bool value 5")
    add("nested_array_too_deep", edit(tiny_llama(), _nested_deep), "key 'x.deep'", "nested")
    add("duplicate_key", edit(tiny_llama(), lambda g: g.kv_u32("llama.block_count", 1)),
        "key 'llama.block_count'", "duplicate")
    add("duplicate_tensor", edit(tiny_llama(), lambda g: g.find("blk.0.attn_v.weight").update(
        name="blk.0.attn_k.weight")), "tensor 'blk.0.attn_k.weight'", "duplicate")
    add("unknown_tensor_type", edit(tiny_llama(), lambda g: g.find("blk.0.ffn_gate.weight").update(
        type=77)), "tensor 'blk.0.ffn_gate.weight'", "type 77")
    add("n_dims_5", edit(tiny_llama(), lambda g: g.find("output_norm.weight").update(
        ne=[32, 1, 1, 1, 1])), "tensor 'output_norm.weight'", "n_dims 5")
    add("dim_zero", edit(tiny_llama(), lambda g: g.find("blk.0.attn_q.weight").update(
        ne=[32, 0])), "tensor 'blk.0.attn_q.weight'", "ne[1] = 0")
    add("row_not_whole_blocks", edit(tiny_llama(), lambda g: g.find("blk.0.attn_q.weight").update(
        type=T_Q8_0, ne=[48, 4])), "tensor 'blk.0.attn_q.weight'", "block size 32")
    add("offset_unaligned", edit(tiny_llama(), lambda g: g.find("blk.0.attn_v.weight").update(
        offset=g.find("blk.0.attn_v.weight")["offset"] + 4)), "tensor 'blk.0.attn_v.weight'",
        "alignment")
    add("tensors_overlap", edit(tiny_llama(), _overlap), "tensor 'blk.0.", "overlaps")
    add("alignment_not_power_of_two", edit(tiny_llama(), lambda g: g.kv_u32("general.alignment", 24)),
        "general.alignment", "24")
    add("alignment_zero", edit(tiny_llama(), lambda g: g.kv_u32("general.alignment", 0)),
        "general.alignment", "0")
    # -- model binding --
    add("architecture_mamba", tiny_llama(arch="mamba"), "architecture 'mamba' is not supported")
    add("missing_tensor", tiny_llama(skip_tensor="blk.0.ffn_down.weight"),
        "tensor 'blk.0.ffn_down.weight': missing")
    add("wrong_shape", edit(tiny_llama(), lambda g: g.find("blk.0.ffn_down.weight").update(
        ne=[64, 16])), "tensor 'blk.0.ffn_down.weight'", "shape {64, 16", "expected {32, 32}")
    add("norm_not_f32", edit(tiny_llama(), lambda g: g.find("blk.0.ffn_norm.weight").update(
        type=T_F16)), "tensor 'blk.0.ffn_norm.weight'", "type f16", "must be f32")
    add("head_count_kv_not_dividing", tiny_llama(head_count_kv=3),
        "attention.head_count_kv", "3 does not divide")
    add("vocab_vs_token_embd", edit(tiny_llama(), _nine_tokens), "tensor 'token_embd.weight'",
        "expected {32, 9}")
    add("missing_block_count", edit(tiny_llama(), lambda g: setattr(g, "kvs", [
        kv for kv in g.kvs if kv[0] != b"llama.block_count"])), "key 'llama.block_count': missing")
    add("rope_scaling_longrope", edit(tiny_llama(), lambda g: g.kv_str("llama.rope.scaling.type",
                                                                         "longrope")),
        "rope scaling 'longrope'")
    return c


CASES = cases()


def run_info(path):
    t0 = time.monotonic()
    p = subprocess.run([STRATA, "info", str(path)], capture_output=True, text=True, timeout=30)
    return p, time.monotonic() - t0


@pytest.fixture(scope="module", autouse=True)
def need_binary():
    if not os.access(STRATA, os.X_OK):
        pytest.skip(f"strata binary not built at {STRATA} (set STRATA_BIN)")


def test_base_file_is_valid(tmp_path):
    f = tmp_path / "base.gguf"
    f.write_bytes(tiny_llama().build())
    p, _ = run_info(f)
    assert p.returncode == 0, p.stderr
    assert "malformed-base" in p.stdout


@pytest.mark.parametrize("name", sorted(CASES))
def test_refused(tmp_path, name):
    data, needles = CASES[name]
    f = tmp_path / f"{name}.gguf"
    f.write_bytes(data)
    p, elapsed = run_info(f)
    assert p.returncode == 1, f"rc {p.returncode}, stderr {p.stderr!r}"
    assert p.stdout == ""
    lines = p.stderr.splitlines()
    assert len(lines) == 1, p.stderr
    assert lines[0].startswith(f"strata info: {f}:"), lines[0]
    for n in needles:
        assert n in lines[0], f"{n!r} not in {lines[0]!r}"
    assert elapsed < 5.0, f"took {elapsed:.2f}s"


def test_committed_corpus_refused():
    files = sorted((ROOT / "tests" / "data" / "malformed").glob("*.bin"))
    assert files, "tests/data/malformed is empty"
    for f in files:
        p, _ = run_info(f)
        assert p.returncode == 1 and len(p.stderr.splitlines()) == 1, (f, p.returncode, p.stderr)


def write_corpus():
    out = ROOT / "tests" / "data" / "malformed"
    out.mkdir(parents=True, exist_ok=True)
    for name, (data, _) in CASES.items():
        (out / f"{name}.bin").write_bytes(data)
    seeds = ROOT / "fuzz" / "corpus" / "gguf"
    seeds.mkdir(parents=True, exist_ok=True)
    (seeds / "tiny_llama.bin").write_bytes(tiny_llama().build())
    (seeds / "tiny_llama_gqa2.bin").write_bytes(tiny_llama(head_count_kv=2).build())
    g = tiny_llama()
    g.kv("x.nested", ARR, struct.pack("<IQ", ARR, 2) + struct.pack("<IQ", U8, 2) + b"\1\2"
         + struct.pack("<IQ", STR, 1) + gstr("deep"))
    g.kv("x.f64", F64, struct.pack("<d", 0.5))
    g.kv("x.i16", I16, struct.pack("<h", -3))
    (seeds / "tiny_llama_value_types.bin").write_bytes(g.build())
    for arch in ("gemma3", "deepseek2"):
        (seeds / f"tiny_{arch}.bin").write_bytes(tiny_arch(arch).build())
    print(f"wrote {len(CASES)} files to {out} and 5 seeds to {seeds}")


if __name__ == "__main__":
    if sys.argv[1:] == ["--write-corpus"]:
        write_corpus()
    else:
        print(__doc__)
