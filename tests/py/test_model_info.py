"""`strata info` on generated models (every weight type, tied and separate
output, copied and synthetic tokenizers) and on the real model, plus
gen_model.py's determinism and its own Q6_K packing."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "tools"))
import gen_model  # noqa: E402

STRATA = os.environ.get("STRATA_BIN", str(ROOT / "build" / "bin" / "strata"))
MODEL = os.environ.get("STRATA_MODEL", "/root/.cache/strata/SmolLM2-135M-Instruct.Q4_1.gguf")


def need_binary():
    if not os.access(STRATA, os.X_OK):
        pytest.skip(f"strata binary not built at {STRATA} (set STRATA_BIN)")


def need_model():
    if not os.path.exists(MODEL):
        pytest.skip(f"model {MODEL} not present (set STRATA_MODEL)")


def info_json(path) -> dict:
    p = subprocess.run([STRATA, "info", str(path), "--json"], capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout.count("\n") == 1            # one JSON object, one line
    return json.loads(p.stdout)


@pytest.mark.parametrize("dtype", sorted(gen_model.DTYPES))
def test_generated_every_dtype(tmp_path, dtype):
    need_binary()
    f = tmp_path / f"m_{dtype}.gguf"
    gen_model.write_model(str(f), n_layer=3, dim=256, n_head=8, n_head_kv=2, n_ff=512,
                          vocab=300, ctx=512, dtype=dtype, embd_dtype="f32", rope_base=5e5,
                          rms_eps=1e-6, seed=3)
    j = info_json(f)
    hp = j["hparams"]
    assert (hp["n_layer"], hp["n_embd"], hp["n_ff"], hp["n_head"], hp["n_head_kv"]) == (3, 256, 512, 8, 2)
    assert (hp["head_dim"], hp["n_vocab"], hp["n_ctx_train"], hp["rope_dim"]) == (32, 300, 512, 32)
    assert hp["rope_theta"] == 500000 and abs(hp["rms_eps"] - 1e-6) < 1e-12
    assert j["architecture"] == "llama" and j["name"] == "strata-test-llama"
    assert j["tied_output"] is True and j["chat_template"] is True
    assert j["tokenizer"] == {"model": "gpt2", "pre": "default"}
    assert j["n_tensors"] == 2 + 9 * 3 and j["file_size"] == f.stat().st_size
    types = j["types"]
    n_mat = 7 * 3
    if dtype == "f32":
        assert types["f32"]["count"] == 2 + 9 * 3
    else:
        assert types[dtype]["count"] == n_mat
        assert types["f32"]["count"] == 2 + 2 * 3
    per_row = {"f32": 1024, "f16": 512, "bf16": 512, "q8_0": 272, "q4_0": 144, "q4_1": 160,
               "q5_0": 176, "q5_1": 192, "q6_k": 210, "q2_k": 84, "q3_k": 110, "q4_k": 144,
               "q5_k": 176}[dtype]
    # rows of ne[0] = 256: q 256 + k 64 + v 64 + o 256 + gate 512 + up 512 per layer;
    # ffn_down rows have ne[0] = 512 (two rows' worth)
    rows = 3 * (256 + 64 + 64 + 256 + 512 + 512 + 2 * 256)
    if dtype != "f32":
        assert types[dtype]["bytes"] == rows * per_row
    assert j["tensor_bytes"] == sum(t["bytes"] for t in types.values())


def test_generated_options(tmp_path):
    need_binary()
    f = tmp_path / "m.gguf"
    gen_model.main([str(f), "--n-layer", "1", "--dim", "64", "--n-head", "4", "--n-ff", "96",
                    "--dtype", "q4_0", "--separate-output", "--rope-scale", "4",
                    "--rope-dim", "8", "--vocab", "400"])
    j = info_json(f)
    assert j["tied_output"] is False
    assert j["hparams"]["n_head_kv"] == 4 and j["hparams"]["rope_dim"] == 8
    assert j["hparams"]["rope_freq_scale"] == 0.25 and j["hparams"]["n_vocab"] == 400


def test_generated_is_deterministic(tmp_path):
    a, b, c = tmp_path / "a.gguf", tmp_path / "b.gguf", tmp_path / "c.gguf"
    for path, seed in ((a, 7), (b, 7), (c, 8)):
        gen_model.write_model(str(path), dtype="q6_k", dim=256, n_ff=256, seed=seed)
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()


def test_q6_k_packing_roundtrip():
    import gguf
    rng = np.random.default_rng(5)
    x = rng.standard_normal((4, 512)).astype(np.float32)
    y = gguf.quants.dequantize(gen_model.quantize_q6_k(x), gguf.GGMLQuantizationType.Q6_K)
    # 6-bit codes with 8-bit sub-block scales: error well under 2% of the range
    assert y.shape == x.shape and np.abs(y - x).max() < 0.02 * np.abs(x).max()


def test_copied_tokenizer(tmp_path):
    need_binary()
    need_model()
    f = tmp_path / "tok.gguf"
    gen_model.write_model(str(f), n_layer=1, dim=32, n_head=2, n_ff=32, dtype="f16",
                          tokenizer_from=MODEL)
    j = info_json(f)
    real = info_json(MODEL)
    assert j["tokenizer"] == real["tokenizer"] == {"model": "gpt2", "pre": "smollm"}
    assert j["hparams"]["n_vocab"] == real["hparams"]["n_vocab"] == 49152
    assert j["chat_template"] is True


def test_real_model_text_and_json():
    need_binary()
    need_model()
    p = subprocess.run([STRATA, "info", MODEL], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert "architecture:   llama" in p.stdout
    assert "tokenizer:      gpt2 (pre smollm)" in p.stdout
    assert "chat template:  present" in p.stdout
    j = info_json(MODEL)
    hp = j["hparams"]
    if "SmolLM2-135M-Instruct.Q4_1" in MODEL:
        assert (hp["n_layer"], hp["n_embd"], hp["n_ff"], hp["n_head"], hp["n_head_kv"],
                hp["n_vocab"]) == (30, 576, 1536, 9, 3, 49152)
        assert j["tied_output"] is True and j["n_tensors"] == 272
        assert j["types"]["q4_1"]["count"] == 210 and j["types"]["f32"]["count"] == 61
        assert j["types"]["q8_0"]["count"] == 1
        assert j["types"]["q8_0"]["bytes"] == 576 // 32 * 34 * 49152


def test_usage_errors(tmp_path):
    need_binary()
    assert subprocess.run([STRATA, "info"], capture_output=True).returncode == 2
    assert subprocess.run([STRATA, "info", "--bogus", "x"], capture_output=True).returncode == 2
    p = subprocess.run([STRATA, "info", str(tmp_path / "absent.gguf")], capture_output=True, text=True)
    assert p.returncode == 1 and "cannot open" in p.stderr and len(p.stderr.splitlines()) == 1
    p = subprocess.run([STRATA, "info", "--help"], capture_output=True, text=True)
    assert p.returncode == 0 and "usage" in p.stdout
