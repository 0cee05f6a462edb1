"""`strata tokenize` against Hugging Face `tokenizers` on byte-level BPE.

The reference is a `tokenizers.Tokenizer` built from the GGUF's own
vocabulary and merges with the pre-tokenizer the model declares
(tokenizer.ggml.pre): for SmolLM2 ("smollm") that is Digits(individual) then
ByteLevel, as in the model's tokenizer.json. The Llama 3 / Qwen2 / GPT-2
pre-tokenizers are checked by rewriting the same vocabulary into small
metadata-only GGUF files with another tokenizer.ggml.pre, and giving the
reference the regex those models' tokenizer.json carry.

Interface used: the texts go in one file separated by NUL bytes, and
`strata tokenize -m M --file F --nul --json` prints one JSON array of id
arrays, so each check is one process.

Needs: STRATA_MODEL (SmolLM2-135M-Instruct GGUF), pip packages tokenizers and
gguf; the binary from STRATA_BIN or build/bin/strata.
"""
import json
import os
import random
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "tests" / "data" / "tokenizer" / "corpus.json"
DEFAULT_MODEL = Path.home() / ".cache" / "strata" / "SmolLM2-135M-Instruct.Q4_1.gguf"

tokenizers = pytest.importorskip("tokenizers", reason="pip package tokenizers not installed")
gguf = pytest.importorskip("gguf", reason="pip package gguf not installed")

LLAMA3_RE = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
             r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_RE = LLAMA3_RE.replace(r"\p{N}{1,3}", r"\p{N}")


@pytest.fixture(scope="module")
def strata():
    b = Path(os.environ.get("STRATA_BIN", ROOT / "build" / "bin" / "strata"))
    if not b.exists():
        pytest.skip(f"strata binary not found at {b} (set STRATA_BIN)")
    return str(b)


@pytest.fixture(scope="module")
def model():
    m = Path(os.environ.get("STRATA_MODEL", DEFAULT_MODEL))
    if not m.exists():
        pytest.skip(f"model not found at {m} (set STRATA_MODEL to the SmolLM2-135M-Instruct GGUF)")
    return str(m)


@pytest.fixture(scope="module")
def corpus():
    return json.loads(CORPUS.read_text(encoding="utf-8"))


def read_vocab(path):
    r = gguf.GGUFReader(path)

    def arr(key):
        f = r.fields[key]
        return [f.parts[i] for i in f.data]

    def s(key):
        f = r.fields.get(key)
        return bytes(f.parts[f.data[0]]).decode() if f else None

    return {
        "tokens": [bytes(p).decode("utf-8") for p in arr("tokenizer.ggml.tokens")],
        "types": [int(p[0]) for p in arr("tokenizer.ggml.token_type")],
        "merges": [bytes(p).decode("utf-8") for p in arr("tokenizer.ggml.merges")],
        "pre": s("tokenizer.ggml.pre"),
    }


def reference(v, pre, special):
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers
    vocab = {t: i for i, t in enumerate(v["tokens"])}
    merges = [tuple(m.split(" ", 1)) for m in v["merges"]]
    tk = Tokenizer(models.BPE(vocab=vocab, merges=merges, ignore_merges=(pre == "llama3")))
    bl = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if pre == "smollm":
        tk.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), bl])
    elif pre in ("llama3", "qwen2"):
        tk.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(LLAMA3_RE if pre == "llama3" else QWEN2_RE), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    else:
        tk.pre_tokenizer = bl
    tk.decoder = decoders.ByteLevel()
    if special:
        tk.add_special_tokens([AddedToken(t, special=True, normalized=False)
                               for t, ty in zip(v["tokens"], v["types"]) if ty == 3])
    return tk


def encode_all(strata, model, texts, tmp_path, special=False):
    f = tmp_path / "texts.bin"
    f.write_bytes(b"\0".join(t.encode("utf-8") for t in texts))
    args = [strata, "tokenize", "-m", model, "--file", str(f), "--nul", "--json"]
    if special:
        args.append("--special")
    out = subprocess.run(args, capture_output=True, check=True, timeout=120)
    got = json.loads(out.stdout)
    assert len(got) == len(texts)
    return got


def compare(tk, texts, got):
    bad = []
    for t, ids in zip(texts, got):
        ref = tk.encode(t, add_special_tokens=False).ids
        if ref != ids:
            bad.append((t, ref, ids))
    assert not bad, "mismatches (text, reference, strata): " + repr(bad[:3])


def random_texts(seed, n):
    rng = random.Random(seed)
    pool = (list("aZ09 \t\n\r'sS,.!?-_\"()") + ["'s", "'re", "'VE", "'Ll", "  ", "\n\n", " \n", "\r\n"]
            + list("éÅßЖж中文日本😀👍🏽\u200d\ufe0f١²½Ⅻ\u00a0\u2003\u3000\u0085\u001c\u00ad")
            + ["👨\u200d👩\u200d👧", "🇺🇸"])
    return ["".join(rng.choice(pool) for _ in range(rng.randint(1, 40))) for _ in range(n)]


@pytest.fixture(scope="module")
def vocab(model):
    return read_vocab(model)


@pytest.mark.parametrize("special", [False, True])
def test_corpus_matches_reference(strata, model, vocab, corpus, tmp_path, special):
    assert vocab["pre"] == "smollm"
    got = encode_all(strata, model, corpus, tmp_path, special)
    compare(reference(vocab, "smollm", special), corpus, got)


def test_random_text_matches_reference(strata, model, vocab, tmp_path):
    texts = random_texts(1234, 2000)
    compare(reference(vocab, "smollm", False), texts, encode_all(strata, model, texts, tmp_path))


@pytest.mark.parametrize("pre", ["gpt2", "llama3", "qwen2"])
def test_other_pretokenizers_match_reference(strata, model, vocab, corpus, tmp_path, pre):
    path = tmp_path / f"vocab_{pre}.gguf"
    w = gguf.GGUFWriter(str(path), arch="llama")
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(pre)
    w.add_token_list(vocab["tokens"])
    w.add_token_types(vocab["types"])
    w.add_token_merges(vocab["merges"])
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    texts = corpus + random_texts(99, 1000)
    compare(reference(vocab, pre, True), texts, encode_all(strata, str(path), texts, tmp_path, special=True))


def test_decode_round_trips(strata, model, vocab, corpus, tmp_path):
    tk = reference(vocab, "smollm", True)
    got = encode_all(strata, model, corpus, tmp_path, special=False)
    for text, ids in zip(corpus, got):
        if not ids:
            continue
        out = subprocess.run([strata, "tokenize", "-m", model, "--decode", ",".join(map(str, ids)), "--json"],
                             capture_output=True, check=True, timeout=60)
        dec = json.loads(out.stdout)
        assert dec == text
        assert dec == tk.decode(ids, skip_special_tokens=False)


def test_cli_plain_output_and_errors(strata, model):
    out = subprocess.run([strata, "tokenize", "-m", model, "--text", "Hello world"],
                         capture_output=True, check=True, text=True)
    assert out.stdout.split() == ["19556", "905"]
    out = subprocess.run([strata, "tokenize", "-m", model, "--decode", "1,19556,905,2", "--special"],
                         capture_output=True, check=True, text=True)
    assert out.stdout == "<|im_start|>Hello world<|im_end|>\n"
    bad = subprocess.run([strata, "tokenize", "-m", model, "--decode", "1,99999999"], capture_output=True, text=True)
    assert bad.returncode == 2 and "bad id" in bad.stderr
    bad = subprocess.run([strata, "tokenize", "-m", "/nonexistent.gguf", "--text", "x"],
                         capture_output=True, text=True)
    assert bad.returncode != 0 and "nonexistent" in bad.stderr


def test_refuses_merge_with_unknown_token(strata, vocab, tmp_path):
    path = tmp_path / "bad.gguf"
    w = gguf.GGUFWriter(str(path), arch="llama")
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("smollm")
    w.add_token_list(vocab["tokens"][:300])
    w.add_token_types(vocab["types"][:300])
    w.add_token_merges(["Ġ t", "zzz_not_a_token q"])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    r = subprocess.run([strata, "tokenize", "-m", str(path), "--text", "x"], capture_output=True, text=True)
    assert r.returncode != 0
    assert "merge 1" in r.stderr and "refused" in r.stderr
