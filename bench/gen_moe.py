#!/usr/bin/env python3
"""A DeepSeek-V3-shaped synthetic GGUF (arch deepseek2) with random Q8_0
weights, for the MoE decode benchmark (bench/moe_decode.sh).

    python3 bench/gen_moe.py OUT.gguf [--experts-used K] [--seed S]

The shape is V3's, scaled down to a few hundred MB so that its whole set of
experts stays far outside the CPU caches while a token reads only K of them:
MLA with a query LoRA (q_lora_rank 384, kv_lora_rank 256, 64 + 32 rope key
dims, 64 value dims, 8 heads), one dense leading layer, five MoE layers of 64
routed experts (width 512) in 8 groups (4 used) plus one shared expert,
sigmoid gating with the exp_probs_b correction bias, normalized top-K weights
scaled by 2.5, YaRN over an original 4096 positions. Metadata and tensor
names are those of llama.cpp's converter (tests/tools/arch_ref.py writes
them); the weights are random blocks, the same for every K with one seed, so
files that differ in K differ only in expert_used_count. Nothing here is a
trained model: its text is noise, its cost per token is real.
"""
import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "tools"))
import arch_ref  # noqa: E402  (metadata writer with the converter's conventions)
from gguf import GGMLQuantizationType as QT  # noqa: E402

H = dict(vocab_size=320, hidden_size=1024, intermediate_size=2816, moe_intermediate_size=512,
         num_hidden_layers=6, num_attention_heads=8, num_key_value_heads=8,
         q_lora_rank=384, kv_lora_rank=256, qk_nope_head_dim=64, qk_rope_head_dim=32,
         v_head_dim=64, n_routed_experts=64, n_shared_experts=1, first_k_dense_replace=1,
         n_group=8, topk_group=4, norm_topk_prob=True, routed_scaling_factor=2.5,
         max_position_embeddings=16384, rms_norm_eps=1e-6, scoring_func="sigmoid",
         rope_parameters={"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0,
                          "original_max_position_embeddings": 4096, "mscale": 1.0,
                          "mscale_all_dim": 1.0, "beta_fast": 32.0, "beta_slow": 1.0})


def q8_0(rng, shape):
    """Random Q8_0 blocks for a float tensor of numpy shape `shape` (last dim
    the row): int8 quants uniform in [-127, 127] and a per-block f16 scale
    giving the row entries a standard deviation near 1/sqrt(row)."""
    *lead, cols = shape
    nb = cols // 32
    blk = np.empty((*lead, nb, 34), dtype=np.uint8)
    scale = np.float16(1.0 / (np.sqrt(cols) * 73.0))
    blk[..., 0:2] = np.frombuffer(scale.tobytes(), dtype=np.uint8)
    blk[..., 2:] = rng.integers(-127, 128, size=(*lead, nb, 32), dtype=np.int8).view(np.uint8)
    return blk.reshape(*lead, nb * 34), QT.Q8_0


def f32(rng, shape, mean=0.0, std=0.1):
    return (mean + std * rng.standard_normal(shape)).astype(np.float32), QT.F32


def tensors(seed):
    rng = np.random.default_rng(seed)
    d, nh = H["hidden_size"], H["num_attention_heads"]
    ql, kl, nope, rope, v = (H["q_lora_rank"], H["kv_lora_rank"], H["qk_nope_head_dim"],
                             H["qk_rope_head_dim"], H["v_head_dim"])
    E, fe, ff = H["n_routed_experts"], H["moe_intermediate_size"], H["intermediate_size"]
    fs = fe * H["n_shared_experts"]
    t = {"token_embd.weight": q8_0(rng, (H["vocab_size"], d)),
         "output_norm.weight": f32(rng, (d,), 1.0),
         "output.weight": q8_0(rng, (H["vocab_size"], d))}
    for L in range(H["num_hidden_layers"]):
        b = f"blk.{L}."
        t[b + "attn_norm.weight"] = f32(rng, (d,), 1.0)
        t[b + "attn_q_a.weight"] = q8_0(rng, (ql, d))
        t[b + "attn_q_a_norm.weight"] = f32(rng, (ql,), 1.0)
        t[b + "attn_q_b.weight"] = q8_0(rng, (nh * (nope + rope), ql))
        t[b + "attn_kv_a_mqa.weight"] = q8_0(rng, (kl + rope, d))
        t[b + "attn_kv_a_norm.weight"] = f32(rng, (kl,), 1.0)
        t[b + "attn_k_b.weight"] = q8_0(rng, (nh, kl, nope))
        t[b + "attn_v_b.weight"] = q8_0(rng, (nh, v, kl))
        t[b + "attn_output.weight"] = q8_0(rng, (d, nh * v))
        t[b + "ffn_norm.weight"] = f32(rng, (d,), 1.0)
        if L < H["first_k_dense_replace"]:
            t[b + "ffn_gate.weight"] = q8_0(rng, (ff, d))
            t[b + "ffn_up.weight"] = q8_0(rng, (ff, d))
            t[b + "ffn_down.weight"] = q8_0(rng, (d, ff))
            continue
        t[b + "ffn_gate_inp.weight"] = f32(rng, (E, d), 0.0, 1.0 / np.sqrt(d))
        t[b + "exp_probs_b.bias"] = f32(rng, (E,), 0.0, 0.01)
        t[b + "ffn_gate_exps.weight"] = q8_0(rng, (E, fe, d))
        t[b + "ffn_up_exps.weight"] = q8_0(rng, (E, fe, d))
        t[b + "ffn_down_exps.weight"] = q8_0(rng, (E, d, fe))
        t[b + "ffn_gate_shexp.weight"] = q8_0(rng, (fs, d))
        t[b + "ffn_up_shexp.weight"] = q8_0(rng, (fs, d))
        t[b + "ffn_down_shexp.weight"] = q8_0(rng, (d, fs))
    return t


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out")
    ap.add_argument("--experts-used", type=int, default=8)
    ap.add_argument("--seed", type=int, default=7)
    a = ap.parse_args()
    h = dict(H, num_experts_per_tok=a.experts_used)
    case = arch_ref.Case(f"v3-shaped-k{a.experts_used}", "deepseek2", "synthetic", h)
    tmp = Path(a.out + ".tmp")
    arch_ref.write_gguf(tmp, case, h, tensors(a.seed), file_type=7)   # MOSTLY_Q8_0
    tmp.rename(a.out)
    print(a.out)


if __name__ == "__main__":
    main()
