"""Every weight type llama.cpp's quantizer emits in a mix (F16, BF16, Q4_0,
Q4_1, Q5_0, Q5_1, Q8_0, Q2_K..Q6_K) loads and runs end to end: a small
generated Llama whose matrices are all of one type (tests/tools/gen_model.py;
Q2_K..Q5_K as random blocks) against an F32 copy whose every tensor gguf-py
dequantized (an implementation independent of strata's). strata's logits on
the two files agree at every position to within what its activations
allow: float activations (F16, BF16, the K types, and Q5_0/Q5_1 below
AVX-512) to float rounding; 16-bit quantized activations (Q4_0, Q4_1, Q8_0,
and Q5_0/Q5_1 on AVX-512) to 1e-3."""
import numpy as np
import pytest

from conftest import run

import gen_model

SEQ = [5, 17, 260, 3, 99, 141, 42, 7, 201, 64, 11, 298]
INT_ACT = {"q4_0", "q4_1", "q8_0", "q5_0", "q5_1"}   # may quantize activations


def dequantized_copy(src, dst):
    import gguf
    r = gguf.GGUFReader(str(src))
    arch = bytes(r.fields["general.architecture"].parts[-1]).decode()
    w = gguf.GGUFWriter(str(dst), arch)
    for name, f in r.fields.items():
        if name.startswith("GGUF.") or name == "general.architecture":
            continue
        vtype = gguf.GGUFValueType(f.types[0])
        sub = gguf.GGUFValueType(f.types[1]) if vtype == gguf.GGUFValueType.ARRAY else None
        val = 0 if name == "general.file_type" else f.contents()
        w.add_key_value(name, val, vtype, sub_type=sub)
    for t in r.tensors:
        x = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
        w.add_tensor(t.name, x.reshape([int(n) for n in t.shape][::-1]))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def logits(strata, model, tmp_path, tag):
    out = tmp_path / f"{tag}.f32"
    r = run([strata, "eval", "-m", str(model), "--tokens", ",".join(map(str, SEQ)), "--out",
             str(out), "--threads", "2"])
    assert r.returncode == 0, r.stderr[-2000:]
    z = np.fromfile(out, dtype=np.float32).reshape(len(SEQ), -1).astype(np.float64)
    assert np.isfinite(z).all()
    return z


@pytest.mark.parametrize("dtype", sorted(set(gen_model.DTYPES) - {"f32"}))
def test_type_runs_like_its_dequantized_copy(strata, tmp_path, dtype):
    q = tmp_path / f"m_{dtype}.gguf"
    gen_model.write_model(str(q), n_layer=2, dim=256, n_head=8, n_head_kv=2, n_ff=512,
                          vocab=300, ctx=256, dtype=dtype, embd_dtype=dtype, seed=5)
    f = tmp_path / "m_f32.gguf"
    dequantized_copy(q, f)
    zq, zf = logits(strata, q, tmp_path, "q"), logits(strata, f, tmp_path, "f")
    err = float((np.abs(zq - zf).max(axis=1) / np.abs(zf).max(axis=1)).max())
    tol = 1e-3 if dtype in INT_ACT else 1e-4
    assert err <= tol, f"{dtype}: {err:.3g} from its dequantized F32 copy"
    # and the type itself is what ran: the file holds it
    r = run([strata, "info", str(q), "--json"])
    assert f'"{dtype}"' in r.stdout
