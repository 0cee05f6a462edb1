#!/usr/bin/env python3
"""Tiny random Hugging Face reference models, written to GGUF the way
llama.cpp's convert_hf_to_gguf.py writes them, with the logits transformers
computes for them.

    python3 tests/tools/arch_ref.py                 # every case, into the cache
    python3 tests/tools/arch_ref.py qwen3 gemma3 --force
    python3 tests/tools/arch_ref.py --list

As a module: `ensure(case) -> dict of paths` (builds what is missing or
stale), `load_ref(case) -> dict of arrays`, `CASES`, `SEQ`, `PROMPT`.

Per case, under $STRATA_CACHE/arch-ref (default ~/.cache/strata/arch-ref):
  <case>.gguf          F32 weights
  <case>.q8_0.gguf     Q8_0 copy          (llama, qwen2, deepseek3, qwen3moe only)
  <case>.q4_0.gguf     Q4_0 copy          (same cases)
  <case>.ref.npz       seq [24], logits [24, vocab] (float64) for seq;
                       prompt [8], greedy [32] (HF argmax continuation),
                       greedy_logits [8+32-1.., vocab] for prompt+greedy
                       (teacher forced), greedy_margin [32] (top1 - top2 of
                       each greedy step / max |logit|); for quantized copies
                       logits_<qt> and greedy_logits_<qt>: the same HF model
                       with the copy's dequantized weights.
  <case>.json          the stamp: VERSION, this file's sha256, torch,
                       transformers and gguf versions, the HF config, the
                       seed, the smallest greedy and router margins. A file
                       is rebuilt when its stamp differs (any edit of this
                       file, another library version, --force).

The HF model is built in float32 with a fixed seed (weights drawn here, not
by HF's initializer, so that logits are not flat: linear weights
N(0, 1/fan_in), norms 1 + N(0, 0.1^2), biases N(0, 0.1^2)) and the reference
is computed in float64 from exactly those float32 weights (eager attention),
so the reference itself carries no float32 rounding. Seeds are searched from
`Case.seed` until every greedy step has a top-1 margin of at least 1e-3 of
max |logit| and (MoE cases) every routing decision of every token of `SEQ`
and prompt+greedy is at least 1e-3 away from a tie (V3: in sigmoid score + bias
units; softmax routing: in logits, which rank the experts), so a correct engine in
float32 cannot pick a different token or expert.

Conventions, with their sources. "conv-new" is ggml-org/llama.cpp's
convert_hf_to_gguf.py of 2025-26 (TextModel, Gemma3Model, DeepseekV2Model,
read through the public code index); "conv-feb25" is the copy in
/work/.mirror/ggerganov+llama.cpp (c392e509, 2025-02-20). Where they differ
the newer one is followed.

* Input to the converter logic: `config.to_dict()` of the HF config (what
  save_pretrained writes to config.json), plus the keys the original
  DeepSeek checkpoints' config.json carry and transformers 5 no longer
  models (`scoring_func`, `topk_method`). Metadata is written by replaying
  the converter's calls on that dict; tensor names come from gguf-py's own
  `get_tensor_name_map(arch, n_layer)` (the converter's map_tensor_name).
* Every arch (TextModel.set_gguf_parameters): block_count, context_length
  (max_position_embeddings), embedding_length, feed_forward_length
  (intermediate_size), attention.head_count, attention.head_count_kv,
  rope.freq_base (rope_parameters[full_attention].rope_theta), rope scaling
  keys from rope_parameters, attention.layer_norm_rms_eps, expert_count /
  expert_used_count / expert_group_count / expert_group_used_count /
  expert_gating_func when the hparams have them, attention.key_length and
  value_length = head_dim when the config has head_dim, general.file_type.
  vocab_size is written by the Llama and DeepseekV2 classes only.
  1-D tensors are F32 in every file.
* llama: rope.dimension_count = head_dim, vocab_size. q_proj/k_proj rows are
  permuted by LlamaModel.permute (reshape(n_head, 2, hd/2, in).swapaxes(1, 2))
  with n_head for Q and n_head_kv for K: HF Llama rotates the two halves of a
  head (rotate_half, NEOX order); llama.cpp's "llama" arch rotates adjacent
  pairs, and the permutation makes the two agree. Untied output here.
* qwen2: no permutation (llama.cpp runs qwen2 with NEOX rope). q/k/v biases
  (non-zero here) as blk.N.attn_{q,k,v}.bias. No head_dim in Qwen2's config,
  so no key_length. Untied output.
* qwen3: as qwen2 (NEOX, no permutation, no biases) plus blk.N.attn_q_norm /
  attn_k_norm [head_dim] (plain RMSNorm weight, per head, before rope) and
  key_length = value_length = head_dim (32 here, hidden/heads is 16). Tied
  embeddings: no output.weight (save_pretrained drops lm_head when tied).
* gemma3 (Gemma3Model): NEOX rope, no permutation. Every tensor whose HF name
  ends in "norm.weight" (input_layernorm, post_attention_layernorm,
  pre_feedforward_layernorm, post_feedforward_layernorm, q_norm, k_norm,
  model.norm) is stored as w + 1, because Gemma3RMSNorm computes
  x * (1 + w); GGUF norms are then plain multipliers. Names: attn_norm,
  post_attention_norm, ffn_norm (= pre_feedforward), post_ffw_norm,
  attn_q_norm, attn_k_norm. Keys: context_length, head_count, rms eps,
  key_length = value_length = head_dim, rope.freq_base = the global theta,
  rope.freq_base_swa = the local theta (TextModel, from
  rope_parameters[sliding_attention]), attention.sliding_window,
  head_count_kv. final_logit_softcapping only when set, and
  attn_logit_softcapping never (conv-new asserts it is None). llama.cpp
  (llama-model.cpp, LLM_ARCH_GEMMA3) does not read a layer pattern or a
  query scale from the file: it hard-codes swa pattern 6 (layers i with
  i % 6 < 5 slide), local theta 10000 and the query scale 1/sqrt(head_dim)
  (1/sqrt(n_embd/n_head) for the 62-layer 27B only), and its sliding-window
  graph applies no final softcapping. The HF model is therefore built within
  what a GGUF can express: 6 layers with the default pattern (5 sliding,
  1 global), rope_local_base_freq 10000, query_pre_attn_scalar = head_dim,
  both softcappings None (as in the released Gemma 3 configs). The input
  embedding is scaled by sqrt(hidden) in HF and in llama.cpp alike (not a
  file convention). sliding_window 8: token i sees tokens i-7..i
  (HF: q - kv < window; llama.cpp LLAMA_SWA_TYPE_STANDARD the same).
  Tied embeddings.
* deepseek2 (DeepseekV2Model, for DeepseekV3ForCausalLM and
  DeepseekV2ForCausalLM alike, arch "deepseek2"):
  - head_count_kv = 1 (conv-new: "MLA converts into MQA"; conv-feb25 wrote
    n_head). key_length = kv_lora_rank + qk_rope_head_dim, value_length =
    kv_lora_rank, key_length_mla = qk_nope_head_dim + qk_rope_head_dim,
    value_length_mla = v_head_dim (conv-new; conv-feb25 wrote the _mla
    values as key_length/value_length and had no _mla keys).
  - leading_dense_block_count = first_k_dense_replace, vocab_size,
    q_lora_rank (only when not None), kv_lora_rank,
    expert_feed_forward_length = moe_intermediate_size, expert_count =
    n_routed_experts, expert_shared_count, expert_weights_scale =
    routed_scaling_factor (whenever set, 1.0 included), expert_weights_norm
    (only when norm_topk_prob is true), rope.dimension_count =
    qk_rope_head_dim, expert_used_count, expert_group_count = n_group,
    expert_group_used_count = topk_group, expert_gating_func = 2 (sigmoid)
    or 1 (softmax) from scoring_func.
  - YaRN (deepseek3): rope.scaling.type "yarn", rope.scaling.factor,
    rope.scaling.original_context_length, yarn_beta_fast / yarn_beta_slow
    (TextModel writes them when rope_parameters has them, as DeepSeek-V3's
    config does), rope.scaling.yarn_log_multiplier = 0.1 * mscale_all_dim
    (conv-new, tag TAG_DEEPSEEK2_YARN_LOG_MUL_FIX). HF folds
    yarn_get_mscale(factor, mscale_all_dim)^2 into the softmax scale and
    attention_factor = mscale/mscale_all_dim ratio (1.0 here) into cos/sin.
  - kv_b_proj [n_head * (nope + v), kv_lora] is not stored; conv-new splits
    it: kv_b.view(n_head, nope + v, kv_lora) -> k_b [n_head, nope, kv_lora]
    transposed to [n_head, kv_lora, nope] = blk.N.attn_k_b.weight, GGUF ne
    {qk_nope_head_dim, kv_lora_rank, n_head}; v_b [n_head, v, kv_lora] =
    blk.N.attn_v_b.weight, ne {kv_lora_rank, v_head_dim, n_head}. No
    attn_kv_b.
  - rope on q_pe / k_pe: no permutation of q_b_proj / q_proj /
    kv_a_proj_with_mqa (neither converter permutes deepseek2, and llama.cpp
    runs it with LLAMA_ROPE_TYPE_NORM, adjacent pairs). HF agrees:
    DeepseekV3 (rope_interleave True) rotates pairs (x0,x1),(x2,x3)... and
    writes the result de-interleaved, the same permutation for q and k, so
    q.k is that of adjacent-pair rope; DeepseekV2 multiplies complex pairs
    (view_as_complex on reshape(..., -1, 2)), adjacent pairs too. q's rope
    part is the last qk_rope_head_dim of each head; k_pe is the last
    qk_rope_head_dim rows of kv_a_proj_with_mqa (after the kv_lora_rank
    latent), shared by all heads.
  - MoE: mlp.gate.weight -> ffn_gate_inp.weight (kept F32 in the quantized
    copies, as the converter does), e_score_correction_bias ->
    exp_probs_b.bias (renamed e_score_correction.bias first), experts
    stacked per kind: ffn_gate_exps / ffn_up_exps [E, moe_inter, hidden]
    (ne {hidden, moe_inter, E}) and ffn_down_exps [E, hidden, moe_inter]
    (ne {moe_inter, hidden, E}); transformers 5 keeps them fused as
    gate_up_proj [E, 2*moe_inter, hidden] (gate first), which is split here.
    Shared experts: ffn_{gate,up,down}_shexp (size moe_inter *
    n_shared_experts). Dense leading layers: ffn_{gate,up,down}.
  - deepseek3: V3 config with q_lora_rank 32 (attn_q_a, attn_q_a_norm,
    attn_q_b), sigmoid scoring + e_score_correction_bias (non-zero),
    n_group 4 / topk_group 2 (noaux_tc), norm_topk_prob, scale 2.5, YaRN
    factor 4 over original 64 positions (so it bends frequencies inside the
    test's 56 positions).
    deepseek2lite: DeepseekV2ForCausalLM as DeepSeek-V2-Lite is: q_lora_rank
    None (attn_q), softmax scoring, topk_method greedy, n_group = topk_group
    = 1 (written, as the real config has them), norm_topk_prob false, scale
    1.0, 2 shared experts, default rope.
* qwen3moe (Qwen2MoeModel's set_gguf_parameters): qwen3's attention (Q/K
  norms, NEOX rope, key_length = head_dim) and in every layer (decoder
  sparse step 1, no mlp_only_layers) mlp.gate -> ffn_gate_inp and the fused
  experts split into ffn_{gate,up,down}_exps as for deepseek2; expert_count,
  expert_used_count, expert_feed_forward_length; no shared expert, no
  expert_weights_norm key: llama.cpp's qwen3moe graph always normalizes the
  chosen weights, as HF does with norm_topk_prob (true here and in the
  released models). Softmax routing.
* Tokenizer: the synthetic byte-level BPE of tests/tools/gen_model.py (gpt2
  model, "default" pre-tokenizer, ChatML specials at the end, no BOS added),
  so `strata generate` and the cluster work on text prompts; the logits
  tests feed token ids.
* Quantized copies: the converter's --outtype rule (every .weight of 2 or 3
  dims except ffn_gate_inp; 1-D and biases F32; token_embd included), with
  Q8_0, and the same rule with Q4_0 (not llama-quantize's mixed Q4_0 recipe,
  which would put output.weight in Q6_K). gguf-py quantizes and dequantizes.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import sys
from pathlib import Path

import numpy as np

import gguf
from gguf import GGMLQuantizationType as QT

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gen_model  # noqa: E402  (the synthetic tokenizer)

VERSION = 1
VOCAB = 320
# A fixed sequence for the all-positions logits test and a prompt for the
# greedy test; ids are below the specials (317..319).
SEQ = [41, 300, 7, 112, 256, 85, 3, 199, 64, 271, 18, 150, 92, 233, 5, 310,
       77, 128, 260, 33, 201, 9, 288, 146]
PROMPT = [84, 104, 101, 32, 99, 97, 112, 105]       # "The capi" as bytes
N_GREEDY = 32
MARGIN = 1e-3
QTYPES = {"q8_0": QT.Q8_0, "q4_0": QT.Q4_0}
MOE_ARCHS = ("deepseek2", "qwen3moe")   # HF's fused experts split on the way to GGUF


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    arch: str                  # GGUF general.architecture
    hf_class: str              # transformers class
    config: dict               # HF config kwargs
    extra_hparams: dict = dataclasses.field(default_factory=dict)
    quantized: bool = False
    seed: int = 1


_ROPE = {"rope_type": "default", "rope_theta": 10000.0}
CASES: dict[str, Case] = {c.name: c for c in [
    Case("llama", "llama", "LlamaForCausalLM", dict(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        rms_norm_eps=1e-5, rope_parameters=dict(_ROPE), tie_word_embeddings=False),
        quantized=True, seed=11),
    Case("qwen2", "qwen2", "Qwen2ForCausalLM", dict(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        rms_norm_eps=1e-6, rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
        tie_word_embeddings=False), quantized=True, seed=21),
    Case("qwen3", "qwen3", "Qwen3ForCausalLM", dict(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=2, head_dim=32,
        max_position_embeddings=256, rms_norm_eps=1e-6,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
        tie_word_embeddings=True), seed=31),
    Case("gemma3", "gemma3", "Gemma3ForCausalLM", dict(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=6,
        num_attention_heads=4, num_key_value_heads=2, head_dim=32,
        query_pre_attn_scalar=32, sliding_window=8, max_position_embeddings=256,
        rms_norm_eps=1e-6, final_logit_softcapping=None, attn_logit_softcapping=None,
        rope_parameters={"sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
                         "full_attention": {"rope_type": "default", "rope_theta": 1000000.0}},
        tie_word_embeddings=True, pad_token_id=0, bos_token_id=2, eos_token_id=1), seed=41),
    Case("deepseek3", "deepseek2", "DeepseekV3ForCausalLM", dict(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=128, moe_intermediate_size=32,
        num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=4,
        q_lora_rank=32, kv_lora_rank=32, qk_nope_head_dim=32, qk_rope_head_dim=16,
        v_head_dim=32, n_routed_experts=8, num_experts_per_tok=2, n_shared_experts=1,
        first_k_dense_replace=1, n_group=4, topk_group=2, norm_topk_prob=True,
        routed_scaling_factor=2.5, max_position_embeddings=256, rms_norm_eps=1e-6,
        num_mtp_layers=0, tie_word_embeddings=False,
        rope_parameters={"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0,
                         "original_max_position_embeddings": 64, "mscale": 1.0,
                         "mscale_all_dim": 1.0, "beta_fast": 32.0, "beta_slow": 1.0}),
        extra_hparams={"scoring_func": "sigmoid", "topk_method": "noaux_tc"},
        quantized=True, seed=51),
    Case("deepseek2lite", "deepseek2", "DeepseekV2ForCausalLM", dict(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=128, moe_intermediate_size=32,
        num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=4,
        q_lora_rank=None, kv_lora_rank=32, qk_nope_head_dim=32, qk_rope_head_dim=16,
        v_head_dim=32, n_routed_experts=8, num_experts_per_tok=2, n_shared_experts=2,
        first_k_dense_replace=1, n_group=1, topk_group=1, topk_method="greedy",
        norm_topk_prob=False, routed_scaling_factor=1.0, max_position_embeddings=256,
        rms_norm_eps=1e-6, tie_word_embeddings=False, rope_parameters=dict(_ROPE)),
        extra_hparams={"scoring_func": "softmax"}, seed=61),
    Case("qwen3moe", "qwen3moe", "Qwen3MoeForCausalLM", dict(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=128, moe_intermediate_size=32,
        num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2, head_dim=32,
        num_experts=8, num_experts_per_tok=2, norm_topk_prob=True, decoder_sparse_step=1,
        mlp_only_layers=[], max_position_embeddings=256, rms_norm_eps=1e-6,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
        tie_word_embeddings=False), quantized=True, seed=71),
]}


def cache_dir() -> Path:
    base = os.environ.get("STRATA_CACHE") or os.path.expanduser("~/.cache/strata")
    return Path(base) / "arch-ref"


def paths(case: str, root: Path | None = None) -> dict[str, Path]:
    d = root or cache_dir()
    out = {"gguf": d / f"{case}.gguf", "ref": d / f"{case}.ref.npz", "stamp": d / f"{case}.json"}
    if CASES[case].quantized:
        for q in QTYPES:
            out[q] = d / f"{case}.{q}.gguf"
    return out


# ---- the HF model ---------------------------------------------------------------

def build_hf(case: Case, seed: int):
    """The HF model with weights drawn here (float32), in eval mode, float64."""
    import torch
    import transformers

    cfg_cls = getattr(transformers, case.hf_class.replace("ForCausalLM", "Config")
                      .replace("Gemma3Config", "Gemma3TextConfig"))
    cfg = cfg_cls(**case.config)
    cfg._attn_implementation = "eager"
    torch.manual_seed(seed)
    model = getattr(transformers, case.hf_class)(cfg)
    # the plain per-expert loop (grouped_mm has no float64 kernel)
    for c in {id(model.config): model.config, id(cfg): cfg}.values():
        c._experts_implementation = "eager"
        c._attn_implementation = "eager"
    g = torch.Generator().manual_seed(seed)
    gemma = case.arch == "gemma3"

    def normal(shape, std):
        return torch.randn(shape, generator=g, dtype=torch.float32) * std

    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                # around 1 in effect; Gemma's x * (1 + w) means w around 0
                p.copy_(normal(p.shape, 0.1) + (0.0 if gemma else 1.0))
            elif name.endswith(".bias"):
                p.copy_(normal(p.shape, 0.1))
            elif name.endswith("embed_tokens.weight"):
                # Gemma scales the embedding by sqrt(hidden): keep it O(1)
                p.copy_(normal(p.shape, cfg.hidden_size ** -0.5 if gemma else 1.0))
            elif name == "lm_head.weight":
                p.copy_(normal(p.shape, 2.0 * p.shape[-1] ** -0.5))
            else:
                p.copy_(normal(p.shape, p.shape[-1] ** -0.5))
        for name, b in model.named_buffers():
            if name.endswith("e_score_correction_bias"):
                b.copy_(normal(b.shape, 0.1))
        if cfg.tie_word_embeddings:
            model.tie_weights()
    return model.eval().to(torch.float64)


def hparams_of(case: Case, model) -> dict:
    h = model.config.to_dict()
    h.update(case.extra_hparams)
    return h


def state_of(model) -> dict[str, np.ndarray]:
    """The float32 weights by HF name, as save_pretrained would store them
    (tied lm_head dropped)."""
    sd = {}
    tied = model.config.tie_word_embeddings
    for k, v in model.state_dict().items():
        if tied and k == "lm_head.weight":
            continue
        sd[k] = v.detach().to("cpu").numpy().astype(np.float32)
    return sd


# ---- HF <-> GGUF tensors ----------------------------------------------------------

def _permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """LlamaModel.permute of the converter (rows of Q or K, or a bias)."""
    return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


def _unpermute(w: np.ndarray, n_head: int) -> np.ndarray:
    return (w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


def to_gguf(case: Case, h: dict, sd: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """GGUF tensor name -> array (numpy shape = reversed GGUF ne)."""
    arch = gguf.MODEL_ARCH[case.arch.upper()]
    tmap = gguf.get_tensor_name_map(arch, h["num_hidden_layers"])
    out: dict[str, np.ndarray] = {}

    def put(hf_name: str, x: np.ndarray) -> None:
        name = tmap.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise ValueError(f"arch_ref: no GGUF name for {hf_name}")
        out[name] = np.ascontiguousarray(x, dtype=np.float32)

    for k, x in sd.items():
        if case.arch == "llama":
            if k.endswith(("q_proj.weight", "q_proj.bias")):
                x = _permute(x, h["num_attention_heads"])
            elif k.endswith(("k_proj.weight", "k_proj.bias")):
                x = _permute(x, h["num_key_value_heads"])
        if case.arch == "gemma3" and k.endswith("norm.weight"):
            x = x + 1.0
        if case.arch in MOE_ARCHS:
            if k.endswith("e_score_correction_bias"):
                k = k.replace("e_score_correction_bias", "e_score_correction.bias")
            elif k.endswith("kv_b_proj.weight"):
                nh, nope, v = h["num_attention_heads"], h["qk_nope_head_dim"], h["v_head_dim"]
                kv_b = x.reshape(nh, nope + v, x.shape[-1])
                put(k.replace("kv_b_proj", "k_b_proj"), kv_b[:, :nope].transpose(0, 2, 1))
                put(k.replace("kv_b_proj", "v_b_proj"), kv_b[:, nope:])
                continue
            elif k.endswith("mlp.experts.gate_up_proj"):
                inter = h["moe_intermediate_size"]
                base = k.replace("gate_up_proj", "")
                put(base + "gate_proj.weight", x[:, :inter])
                put(base + "up_proj.weight", x[:, inter:])
                continue
            elif k.endswith("mlp.experts.down_proj"):
                put(k + ".weight", x)
                continue
        put(k, x)
    return out


def from_gguf(case: Case, h: dict, t: dict[str, np.ndarray], like: dict[str, np.ndarray]
              ) -> dict[str, np.ndarray]:
    """The inverse of to_gguf onto the HF names of `like` (for the reference
    of the quantized copies: HF run on the dequantized GGUF weights)."""
    fwd_names = {}
    arch = gguf.MODEL_ARCH[case.arch.upper()]
    tmap = gguf.get_tensor_name_map(arch, h["num_hidden_layers"])

    def g(hf_name: str) -> np.ndarray:
        return t[tmap.get_name(hf_name, try_suffixes=(".weight", ".bias"))]

    sd = {}
    for k in like:
        if case.arch == "deepseek2" and k.endswith("kv_b_proj.weight"):
            k_b = g(k.replace("kv_b_proj", "k_b_proj")).transpose(0, 2, 1)
            v_b = g(k.replace("kv_b_proj", "v_b_proj"))
            sd[k] = np.concatenate([k_b, v_b], axis=1).reshape(like[k].shape)
            continue
        if case.arch in MOE_ARCHS and k.endswith("mlp.experts.gate_up_proj"):
            base = k.replace("gate_up_proj", "")
            sd[k] = np.concatenate([g(base + "gate_proj.weight"), g(base + "up_proj.weight")], 1)
            continue
        if case.arch in MOE_ARCHS and k.endswith("mlp.experts.down_proj"):
            sd[k] = g(k + ".weight")
            continue
        name = k.replace("e_score_correction_bias", "e_score_correction.bias")
        x = g(name)
        if case.arch == "llama":
            if k.endswith(("q_proj.weight", "q_proj.bias")):
                x = _unpermute(x, h["num_attention_heads"])
            elif k.endswith(("k_proj.weight", "k_proj.bias")):
                x = _unpermute(x, h["num_key_value_heads"])
        if case.arch == "gemma3" and k.endswith("norm.weight"):
            x = x - 1.0
        sd[k] = x
        fwd_names[k] = name
    return sd


def quant_rule(name: str, x: np.ndarray) -> bool:
    """Whether the converter's --outtype q8_0 quantizes this tensor."""
    return x.ndim >= 2 and name.endswith(".weight") and ".ffn_gate_inp." not in name


def quantized(t: dict[str, np.ndarray], qt: QT) -> dict[str, tuple[np.ndarray, QT, np.ndarray]]:
    """name -> (raw data, type, dequantized float32)."""
    out = {}
    for name, x in t.items():
        if quant_rule(name, x) and x.shape[-1] % 32 == 0:
            q = gguf.quants.quantize(x, qt)
            out[name] = (q, qt, gguf.quants.dequantize(q, qt).reshape(x.shape).astype(np.float32))
        else:
            out[name] = (x, QT.F32, x)
    return out


# ---- GGUF metadata (the converter's calls) ---------------------------------------

def write_gguf(path: Path, case: Case, h: dict, tensors: dict[str, tuple[np.ndarray, QT]],
               file_type: int) -> None:
    w = gguf.GGUFWriter(str(path), case.arch)
    w.add_type(gguf.GGUFType.MODEL)
    w.add_name(f"strata-arch-ref-{case.name}")
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)

    # TextModel.set_gguf_parameters
    hh = dict(h)
    if case.arch == "deepseek2":
        hh["num_key_value_heads"] = 1          # DeepseekV2Model, before super()
    w.add_block_count(hh["num_hidden_layers"])
    w.add_context_length(hh["max_position_embeddings"])
    w.add_embedding_length(hh["hidden_size"])
    w.add_feed_forward_length(hh["intermediate_size"])
    w.add_head_count(hh["num_attention_heads"])
    w.add_head_count_kv(hh["num_key_value_heads"])
    rope = hh.get("rope_parameters") or {}
    rp = rope.get("full_attention", rope)
    if rp.get("rope_type") == "yarn" and rp.get("factor") is not None:
        w.add_rope_scaling_type(gguf.RopeScalingType.YARN)
        w.add_rope_scaling_factor(rp["factor"])
        w.add_rope_scaling_orig_ctx_len(rp["original_max_position_embeddings"])
        if rp.get("extrapolation_factor") is not None:
            w.add_rope_scaling_yarn_ext_factor(rp["extrapolation_factor"])
        if rp.get("attention_factor", rp.get("attn_factor")) is not None:
            w.add_rope_scaling_yarn_attn_factor(rp.get("attention_factor", rp.get("attn_factor")))
        if rp.get("beta_fast") is not None:
            w.add_rope_scaling_yarn_beta_fast(rp["beta_fast"])
        if rp.get("beta_slow") is not None:
            w.add_rope_scaling_yarn_beta_slow(rp["beta_slow"])
    elif rp.get("rope_type") not in (None, "default"):
        raise ValueError(f"arch_ref: rope type {rp.get('rope_type')} not replayed here")
    if rp.get("rope_theta") is not None:
        w.add_rope_freq_base(rp["rope_theta"])
    if (local := rope.get("sliding_attention", {}).get("rope_theta")) is not None:
        w.add_rope_freq_base_swa(local)
    w.add_layer_norm_rms_eps(hh["rms_norm_eps"])
    for key, add in (("num_local_experts", w.add_expert_count),
                     ("num_experts_per_tok", w.add_expert_used_count),
                     ("n_group", w.add_expert_group_count),
                     ("topk_group", w.add_expert_group_used_count)):
        if hh.get(key) is not None:
            add(hh[key])
    if (sf := hh.get("scoring_func")) is not None:
        w.add_expert_gating_func({"sigmoid": gguf.ExpertGatingFuncType.SIGMOID,
                                  "softmax": gguf.ExpertGatingFuncType.SOFTMAX}[sf])
    key_len = None
    if hh.get("head_dim") is not None:
        key_len = hh["head_dim"]
    w.add_file_type(file_type)

    # the architecture's own class
    if case.arch == "llama":
        w.add_vocab_size(hh["vocab_size"])
        w.add_rope_dimension_count(hh.get("head_dim") or hh["hidden_size"] // hh["num_attention_heads"])
    elif case.arch == "gemma3":
        assert hh.get("attn_logit_softcapping") is None
        key_len = hh["head_dim"]
        if hh.get("final_logit_softcapping"):
            w.add_final_logit_softcapping(hh["final_logit_softcapping"])
        if hh.get("sliding_window_pattern") != 1:
            w.add_sliding_window(hh["sliding_window"])
    elif case.arch == "deepseek2":
        w.add_leading_dense_block_count(hh["first_k_dense_replace"])
        w.add_vocab_size(hh["vocab_size"])
        if hh.get("q_lora_rank") is not None:
            w.add_q_lora_rank(hh["q_lora_rank"])
        w.add_kv_lora_rank(hh["kv_lora_rank"])
        key_len = None
        w.add_key_length(hh["kv_lora_rank"] + hh["qk_rope_head_dim"])
        w.add_value_length(hh["kv_lora_rank"])
        w.add_key_length_mla(hh["qk_nope_head_dim"] + hh["qk_rope_head_dim"])
        w.add_value_length_mla(hh["v_head_dim"])
        w.add_expert_feed_forward_length(hh["moe_intermediate_size"])
        w.add_expert_count(hh["n_routed_experts"])
        w.add_expert_shared_count(hh.get("n_shared_experts", 0))
        if hh.get("routed_scaling_factor") is not None:
            w.add_expert_weights_scale(hh["routed_scaling_factor"])
        if hh.get("norm_topk_prob"):
            w.add_expert_weights_norm(True)
        w.add_rope_dimension_count(hh["qk_rope_head_dim"])
        if rp.get("mscale_all_dim") is not None:
            w.add_rope_scaling_yarn_log_mul(0.1 * rp["mscale_all_dim"])
    elif case.arch == "qwen3moe":
        # Qwen2MoeModel.set_gguf_parameters (Qwen3MoeModel adds nothing):
        # expert_count came from num_local_experts above; no expert_weights_norm
        # key (llama.cpp's qwen3moe graph always normalizes)
        w.add_expert_feed_forward_length(hh["moe_intermediate_size"])
    if key_len is not None:
        w.add_key_length(key_len)
        w.add_value_length(key_len)

    for key, (val, vtype, sub) in gen_model.synthetic_tokenizer(hh["vocab_size"]).items():
        w.add_key_value(key, val, vtype, sub)
    for name, (data, qt) in tensors.items():
        w.add_tensor(name, data, raw_dtype=qt)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


# ---- reference outputs -----------------------------------------------------------

def _logits(model, ids: list[int]) -> np.ndarray:
    import torch
    with torch.no_grad():
        out = model(torch.tensor([ids]), use_cache=False)
    return out.logits[0].numpy().astype(np.float64)


def greedy(model, prompt: list[int], n: int) -> list[int]:
    """Argmax continuation, recomputing the whole sequence each step."""
    ids = list(prompt)
    for _ in range(n):
        ids.append(int(np.argmax(_logits(model, ids)[-1])))
    return ids[len(prompt):]


def _top_margin(z: np.ndarray) -> np.ndarray:
    s = np.sort(z, axis=-1)
    return (s[..., -1] - s[..., -2]) / np.abs(z).max(axis=-1)


class RouterWatch:
    """Records, for each token through each MoE gate, how far the routing
    decision is from a tie (score units); the minimum is kept."""

    def __init__(self, model, case: Case):
        import torch
        self.min = float("inf")
        self.handles = []
        cfg = model.config
        for mod_name, mod in model.named_modules():
            if type(mod).__name__.lower().endswith("topkrouter"):
                self.handles.append(mod.register_forward_hook(self._hook(cfg, torch)))

    def _hook(self, cfg, torch):
        def hook(mod, args, _out):
            x = args[0].reshape(-1, cfg.hidden_size).double()
            s = x @ mod.weight.double().t()
            k = cfg.num_experts_per_tok
            if hasattr(mod, "e_score_correction_bias"):        # V3: sigmoid, groups
                s = s.sigmoid() + mod.e_score_correction_bias.double()
                ng, tg = cfg.n_group, cfg.topk_group
                gs = s.view(-1, ng, s.shape[-1] // ng).topk(2, dim=-1)[0].sum(-1)
                gsorted = gs.sort(dim=-1, descending=True)[0]
                if tg < ng:
                    self.min = min(self.min, float((gsorted[:, tg - 1] - gsorted[:, tg]).min()))
                gidx = gs.topk(tg, dim=-1)[1]
                mask = torch.zeros_like(gs).scatter_(1, gidx, 1).bool()
                mask = mask.unsqueeze(-1).expand(-1, ng, s.shape[-1] // ng).reshape(s.shape)
                s = s.masked_fill(~mask, float("-inf"))
            # softmax routing ranks experts by logit: the margin is taken
            # on the logits (a probability gap is smaller by p, and a flip
            # needs the logits themselves to move)
            ss = s.sort(dim=-1, descending=True)[0]
            self.min = min(self.min, float((ss[:, k - 1] - ss[:, k]).min()))
        return hook

    def close(self):
        for hd in self.handles:
            hd.remove()


def compute(case: Case, seed: int):
    model = build_hf(case, seed)
    watch = RouterWatch(model, case)
    try:
        z = _logits(model, SEQ)
        toks = greedy(model, PROMPT, N_GREEDY)
        zg = _logits(model, PROMPT + toks)
    finally:
        watch.close()
    margins = _top_margin(zg[len(PROMPT) - 1:-1])
    return model, z, toks, zg, margins, watch.min


def build(case_name: str, root: Path | None = None, max_tries: int = 40) -> dict[str, Path]:
    case = CASES[case_name]
    p = paths(case_name, root)
    p["gguf"].parent.mkdir(parents=True, exist_ok=True)
    for seed in range(case.seed, case.seed + max_tries):
        model, z, toks, zg, margins, router = compute(case, seed)
        if margins.min() >= MARGIN and router >= MARGIN:
            break
    else:
        raise RuntimeError(f"arch_ref: {case_name}: no seed in {max_tries} tries gives margins "
                           f">= {MARGIN}")
    h = hparams_of(case, model)
    sd = state_of(model)
    t = to_gguf(case, h, sd)
    # The round trip must be exact, or the quantized references are wrong.
    back = from_gguf(case, h, t, sd)
    # (Gemma's w + 1 - 1 is exact only to float32 rounding.)
    assert all(np.allclose(back[k], sd[k], rtol=0, atol=1e-6) for k in sd), \
        "to_gguf/from_gguf disagree"

    ref = {"seq": np.array(SEQ), "logits": z, "prompt": np.array(PROMPT),
           "greedy": np.array(toks), "greedy_logits": zg, "greedy_margin": margins}
    tmp = {}

    def out(key: str) -> Path:
        tmp[key] = p[key].with_name(p[key].name + ".tmp")
        return tmp[key]

    write_gguf(out("gguf"), case, h, {n: (x, QT.F32) for n, x in t.items()}, gguf.LlamaFileType.ALL_F32)
    if case.quantized:
        import torch
        for qn, qt in QTYPES.items():
            qd = quantized(t, qt)
            ft = {"q8_0": gguf.LlamaFileType.MOSTLY_Q8_0, "q4_0": gguf.LlamaFileType.MOSTLY_Q4_0}[qn]
            write_gguf(out(qn), case, h, {n: (d, q) for n, (d, q, _) in qd.items()}, ft)
            deq = from_gguf(case, h, {n: dq for n, (_, _, dq) in qd.items()}, sd)
            mq = build_hf(case, seed)
            state = {k: torch.from_numpy(v).double() for k, v in deq.items()}
            missing = mq.load_state_dict(state, strict=False)
            assert not missing.unexpected_keys, missing
            ref[f"logits_{qn}"] = _logits(mq, SEQ)
            ref[f"greedy_logits_{qn}"] = _logits(mq, PROMPT + toks)
    with open(out("ref"), "wb") as f:
        np.savez(f, **ref)
    st = stamp(case)
    st.update(seed=seed, min_greedy_margin=float(margins.min()),
              min_router_margin=None if router == float("inf") else router,
              hf_config=h)
    with open(out("stamp"), "w") as f:
        json.dump(st, f, indent=1, default=str)
    for key, tpath in tmp.items():          # the stamp last: it marks completion
        if key != "stamp":
            os.replace(tpath, p[key])
    os.replace(tmp["stamp"], p["stamp"])
    return p


def stamp(case: Case) -> dict:
    import torch
    import transformers
    src = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()
    gm = hashlib.sha256(Path(gen_model.__file__).read_bytes()).hexdigest()
    return {"version": VERSION, "source": src, "gen_model": gm, "case": case.name,
            "torch": torch.__version__, "transformers": transformers.__version__,
            "gguf": getattr(gguf, "__version__", None) or _gguf_version()}


def _gguf_version() -> str:
    try:
        from importlib.metadata import version
        return version("gguf")
    except Exception:                                   # noqa: BLE001
        return "unknown"


def is_fresh(case_name: str, root: Path | None = None) -> bool:
    p = paths(case_name, root)
    if not all(x.exists() for x in p.values()):
        return False
    try:
        old = json.loads(p["stamp"].read_text())
    except (OSError, ValueError):
        return False
    want = stamp(CASES[case_name])
    return all(old.get(k) == v for k, v in want.items())


def ensure(case_name: str, root: Path | None = None, force: bool = False) -> dict[str, Path]:
    if force or not is_fresh(case_name, root):
        return build(case_name, root)
    return paths(case_name, root)


def load_ref(case_name: str, root: Path | None = None) -> dict[str, np.ndarray]:
    with np.load(paths(case_name, root)["ref"]) as z:
        return {k: z[k] for k in z.files}


# ---- an independent reader: the GGUF run with llama.cpp's semantics ------------

def numpy_forward(path: str | Path, ids: list[int]) -> np.ndarray:
    """Logits [len(ids), vocab] (float64) computed from the GGUF alone, the
    way llama.cpp's graphs read it (src/models/{llama,qwen2,qwen3,gemma3,
    deepseek2}.cpp): NORM (adjacent-pair) rope for llama and deepseek2, NEOX
    for the others; Gemma's hard-coded swa pattern 6, local theta 10000 and
    query scale 1/sqrt(head_dim); MLA with the absorbed attn_k_b / attn_v_b;
    ggml's YaRN. It knows nothing of HF, so its agreement with HF's logits
    checks the file conventions above independently of strata."""
    r = gguf.GGUFReader(str(path))
    kv = {}
    for k, f in r.fields.items():
        t0 = gguf.GGUFValueType(f.types[0]) if f.types else None
        if t0 == gguf.GGUFValueType.STRING:
            kv[k] = bytes(f.parts[-1]).decode()
        elif t0 is not None and t0 != gguf.GGUFValueType.ARRAY:
            kv[k] = f.parts[-1].tolist()[0]
    T = {}
    for t in r.tensors:
        if t.tensor_type != QT.F32:
            raise ValueError("numpy_forward reads F32 files only")
        T[t.name] = np.array(t.data, dtype=np.float64).reshape([int(x) for x in t.shape][::-1])
    a = kv["general.architecture"]

    def K(key, default=None):
        return kv.get(f"{a}.{key}", default)

    n_layer, n_embd = K("block_count"), K("embedding_length")
    n_head, n_kv = K("attention.head_count"), K("attention.head_count_kv")
    eps = K("attention.layer_norm_rms_epsilon")
    base = K("rope.freq_base", 10000.0)
    n = len(ids)
    pos = np.arange(n, dtype=np.float64)

    def rms(x, w):
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w

    def rope(x, n_rot, neox, theta_base, yarn=None):
        """x [..., n_tok, head]; rotates the first n_rot dims."""
        i = np.arange(n_rot // 2, dtype=np.float64)
        freq = theta_base ** (-2.0 * i / n_rot)
        if yarn is not None:                      # ggml's rope_yarn, ext_factor 1
            factor, n_orig, b_fast, b_slow = yarn

            def corr(nr):
                return n_rot * np.log(n_orig / (nr * 2 * np.pi)) / (2 * np.log(theta_base))
            lo = max(0.0, np.floor(corr(b_fast)))
            hi = min(n_rot - 1.0, np.ceil(corr(b_slow)))
            ramp = 1 - np.clip((i - lo) / max(0.001, hi - lo), 0, 1)
            freq = freq / factor * (1 - ramp) + freq * ramp
        th = pos[:, None] * freq[None, :]
        c, s_ = np.cos(th), np.sin(th)
        y = x.copy()
        if neox:
            x0, x1 = x[..., :n_rot // 2], x[..., n_rot // 2:n_rot]
            y[..., :n_rot // 2] = x0 * c - x1 * s_
            y[..., n_rot // 2:n_rot] = x0 * s_ + x1 * c
        else:
            x0, x1 = x[..., 0:n_rot:2], x[..., 1:n_rot:2]
            y[..., 0:n_rot:2] = x0 * c - x1 * s_
            y[..., 1:n_rot:2] = x0 * s_ + x1 * c
        return y

    def attend(q, k, v, scale, window=None):
        """q [h, n, d], k/v [h_kv, n, d] -> [n, h * dv]."""
        rep = q.shape[0] // k.shape[0]
        k, v = np.repeat(k, rep, 0), np.repeat(v, rep, 0)
        sc = q @ k.transpose(0, 2, 1) * scale
        qi, ki = np.arange(n)[:, None], np.arange(n)[None, :]
        mask = ki > qi
        if window is not None:
            mask |= qi - ki >= window
        sc = np.where(mask[None], -np.inf, sc)
        p = np.exp(sc - sc.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        return (p @ v).transpose(1, 0, 2).reshape(n, -1)

    def lin(name, x):
        y = x @ T[name + ".weight"].T
        return y + T[name + ".bias"] if name + ".bias" in T else y

    def silu(x):
        return x / (1 + np.exp(-x))

    def gelu(x):
        return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))

    x = T["token_embd.weight"][ids]
    if a == "gemma3":
        x = x * np.sqrt(n_embd)
    for L in range(n_layer):
        b = f"blk.{L}."
        h = rms(x, T[b + "attn_norm.weight"])
        if a == "deepseek2":
            nh = n_head
            kl, vl = K("attention.key_length_mla"), K("attention.value_length_mla")
            n_rot, r_kv = K("rope.dimension_count"), K("attention.kv_lora_rank")
            nope = kl - n_rot
            if b + "attn_q_a.weight" in T:
                q = lin(b + "attn_q_b", rms(lin(b + "attn_q_a", h), T[b + "attn_q_a_norm.weight"]))
            else:
                q = lin(b + "attn_q", h)
            q = q.reshape(n, nh, kl).transpose(1, 0, 2)
            kva = lin(b + "attn_kv_a_mqa", h)
            lat = rms(kva[:, :r_kv], T[b + "attn_kv_a_norm.weight"])      # [n, r_kv]
            yarn, mscale = None, 1.0
            if K("rope.scaling.type") == "yarn":
                fac = K("rope.scaling.factor")
                yarn = (fac, K("rope.scaling.original_context_length"),
                        K("rope.scaling.yarn_beta_fast", 32.0), K("rope.scaling.yarn_beta_slow", 1.0))
                mscale = 1.0 + K("rope.scaling.yarn_log_multiplier", 0.0) * np.log(fac)
            q_pe = rope(q[..., nope:], n_rot, False, base, yarn)
            k_pe = rope(kva[None, :, r_kv:], n_rot, False, base, yarn)[0]   # [n, rope]
            q_abs = np.einsum("hnd,hrd->hnr", q[..., :nope], T[b + "attn_k_b.weight"])
            sc = (q_abs @ lat.T + q_pe @ k_pe.T) * mscale * mscale / np.sqrt(kl)
            sc = np.where((np.arange(n)[None, :] > np.arange(n)[:, None])[None], -np.inf, sc)
            p = np.exp(sc - sc.max(-1, keepdims=True))
            p /= p.sum(-1, keepdims=True)
            o_lat = p @ lat                                                  # [h, n, r_kv]
            o = np.einsum("hnr,hvr->nhv", o_lat, T[b + "attn_v_b.weight"]).reshape(n, nh * vl)
            x = x + lin(b + "attn_output", o)
        else:
            hd = K("attention.key_length", n_embd // n_head)
            q = lin(b + "attn_q", h).reshape(n, n_head, hd).transpose(1, 0, 2)
            k = lin(b + "attn_k", h).reshape(n, n_kv, hd).transpose(1, 0, 2)
            v = lin(b + "attn_v", h).reshape(n, n_kv, hd).transpose(1, 0, 2)
            if b + "attn_q_norm.weight" in T:
                q, k = rms(q, T[b + "attn_q_norm.weight"]), rms(k, T[b + "attn_k_norm.weight"])
            window, theta = None, base
            if a == "gemma3" and L % 6 < 5:
                window, theta = K("attention.sliding_window"), 10000.0
            n_rot = K("rope.dimension_count", hd)
            q, k = rope(q, n_rot, a != "llama", theta), rope(k, n_rot, a != "llama", theta)
            o = lin(b + "attn_output", attend(q, k, v, hd ** -0.5, window))
            if a == "gemma3":
                o = rms(o, T[b + "post_attention_norm.weight"])
            x = x + o
        h = rms(x, T[b + "ffn_norm.weight"])
        if b + "ffn_gate_inp.weight" in T:
            logits = h @ T[b + "ffn_gate_inp.weight"].T                      # [n, E]
            gf = K("expert_gating_func", 1)
            s = 1 / (1 + np.exp(-logits)) if gf == 2 else \
                np.exp(logits - logits.max(-1, keepdims=True))
            if gf != 2:
                s = s / s.sum(-1, keepdims=True)
            choice = s + T.get(b + "exp_probs_b.bias", 0.0)
            E, k_used = s.shape[1], K("expert_used_count")
            ng, tg = K("expert_group_count", 1) or 1, K("expert_group_used_count", 1) or 1
            if ng > 1:
                gsc = np.sort(choice.reshape(n, ng, E // ng), -1)[..., -2:].sum(-1)
                keep = np.argsort(-gsc, -1)[:, :tg]
                gmask = np.zeros((n, ng), bool)
                np.put_along_axis(gmask, keep, True, 1)
                choice = np.where(np.repeat(gmask, E // ng, 1), choice, -np.inf)
            sel = np.argsort(-choice, -1)[:, :k_used]
            wsel = np.take_along_axis(s, sel, 1)
            if K("expert_weights_norm", a == "qwen3moe"):
                wsel = wsel / wsel.sum(-1, keepdims=True)
            wsel = wsel * K("expert_weights_scale", 1.0)
            y = np.zeros_like(x)
            G, U, D = (T[b + f"ffn_{w}_exps.weight"] for w in ("gate", "up", "down"))
            for t_ in range(n):
                for j, e in enumerate(sel[t_]):
                    y[t_] += wsel[t_, j] * (D[e] @ (silu(G[e] @ h[t_]) * (U[e] @ h[t_])))
            if b + "ffn_gate_shexp.weight" in T:
                y += lin(b + "ffn_down_shexp", silu(lin(b + "ffn_gate_shexp", h))
                         * lin(b + "ffn_up_shexp", h))
        else:
            act = gelu if a == "gemma3" else silu
            y = lin(b + "ffn_down", act(lin(b + "ffn_gate", h)) * lin(b + "ffn_up", h))
            if a == "gemma3":
                y = rms(y, T[b + "post_ffw_norm.weight"])
        x = x + y
    x = rms(x, T["output_norm.weight"])
    return x @ T.get("output.weight", T["token_embd.weight"]).T


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("cases", nargs="*", help="default: all")
    ap.add_argument("--cache", default=None, help="directory (default $STRATA_CACHE/arch-ref)")
    ap.add_argument("--force", action="store_true", help="rebuild even when fresh")
    ap.add_argument("--list", action="store_true")
    a = ap.parse_args(argv)
    if a.list:
        for c in CASES.values():
            print(f"{c.name:14s} {c.arch:10s} {c.hf_class}")
        return 0
    root = Path(a.cache) if a.cache else None
    for name in a.cases or list(CASES):
        if name not in CASES:
            print(f"arch_ref: unknown case '{name}' (--list)", file=sys.stderr)
            return 2
        p = ensure(name, root, a.force)
        st = json.loads(p["stamp"].read_text())
        print(f"{name}: {p['gguf']}  seed {st['seed']}  greedy margin {st['min_greedy_margin']:.3g}"
              f"  router margin {st['min_router_margin']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
