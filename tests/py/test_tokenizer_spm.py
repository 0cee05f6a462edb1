"""`strata tokenize` on a SentencePiece ("llama") vocabulary, against
sentencepiece itself.

A small BPE model with byte fallback is trained here on a short text, so the
corpus's CJK, emoji and rare accented letters have no piece and must come out
as <0xNN> byte tokens. Its pieces, scores and types are written into a
metadata-only GGUF (tokenizer.ggml.model = "llama") with gguf-py, and the
ids of `strata tokenize` are compared with `SentencePieceProcessor.encode`
on the shared corpus, then decoded back.

Training uses the identity normalization and keeps extra whitespace, which
is how llama-family vocabularies behave at inference (llama.cpp does not
normalize either). Needs: pip packages sentencepiece and gguf.
"""
import json
import os
import subprocess
from pathlib import Path

import pytest

spm = pytest.importorskip("sentencepiece", reason="pip package sentencepiece not installed")
gguf = pytest.importorskip("gguf", reason="pip package gguf not installed")

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "tests" / "data" / "tokenizer" / "corpus.json"

TRAIN = """The quick brown fox jumps over the lazy dog. It's a dog's life; they're here.
Tokenizers split text into pieces, and pieces into ids. Numbers like 12345 and 3.14159 appear.
Hello world! How are you doing today? I am fine, thank you. Café and naïve are French words.
Distributed inference runs a model across many machines connected by a fast network.
Every worker holds some layers; the coordinator schedules requests and streams tokens back.
    Indented lines, tabs\tand punctuation: (parentheses), [brackets], {braces} -- dashes...
"""


@pytest.fixture(scope="module")
def strata():
    b = Path(os.environ.get("STRATA_BIN", ROOT / "build" / "bin" / "strata"))
    if not b.exists():
        pytest.skip(f"strata binary not found at {b} (set STRATA_BIN)")
    return str(b)


@pytest.fixture(scope="module")
def spm_model(tmp_path_factory):
    d = tmp_path_factory.mktemp("spm")
    text = d / "train.txt"
    text.write_text(TRAIN * 20, encoding="utf-8")
    spm.SentencePieceTrainer.train(
        input=str(text), model_prefix=str(d / "m"), model_type="bpe", vocab_size=420,
        byte_fallback=True, character_coverage=0.999, normalization_rule_name="identity",
        remove_extra_whitespaces=False, add_dummy_prefix=True, minloglevel=2)
    sp = spm.SentencePieceProcessor(model_file=str(d / "m.model"))

    toks, scores, types = [], [], []
    for i in range(sp.get_piece_size()):
        toks.append(sp.id_to_piece(i))
        scores.append(sp.get_score(i))
        types.append(2 if sp.is_unknown(i) else 3 if sp.is_control(i) else 6 if sp.is_byte(i)
                     else 5 if sp.is_unused(i) else 1)
    path = d / "spm.gguf"
    w = gguf.GGUFWriter(str(path), arch="llama")
    w.add_tokenizer_model("llama")
    w.add_token_list(toks)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(sp.bos_id())
    w.add_eos_token_id(sp.eos_id())
    w.add_unk_token_id(sp.unk_id())
    w.add_add_bos_token(True)
    w.add_add_space_prefix(True)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return sp, str(path)


def encode_all(strata, model, texts, tmp_path, extra=()):
    f = tmp_path / "texts.bin"
    f.write_bytes(b"\0".join(t.encode("utf-8") for t in texts))
    out = subprocess.run([strata, "tokenize", "-m", model, "--file", str(f), "--nul", "--json", *extra],
                         capture_output=True, check=True, timeout=120)
    return json.loads(out.stdout)


def test_matches_sentencepiece(strata, spm_model, tmp_path):
    sp, path = spm_model
    corpus = json.loads(CORPUS.read_text(encoding="utf-8"))
    got = encode_all(strata, path, corpus, tmp_path)
    bad = [(t, sp.encode(t), ids) for t, ids in zip(corpus, got) if sp.encode(t) != ids]
    assert not bad, "mismatches (text, sentencepiece, strata): " + repr(bad[:3])
    # the corpus really exercised byte fallback
    assert any(sp.is_byte(i) for ids in got for i in ids)


def test_bos_and_decode(strata, spm_model, tmp_path):
    sp, path = spm_model
    texts = ["Hello world", "Café 你好 😀", "  two spaces", "tabs\tand\nnewlines"]
    got = encode_all(strata, path, texts, tmp_path, extra=["--bos"])
    for t, ids in zip(texts, got):
        assert ids[0] == sp.bos_id() and ids[1:] == sp.encode(t)
        out = subprocess.run([strata, "tokenize", "-m", path, "--decode", ",".join(map(str, ids)), "--json"],
                             capture_output=True, check=True, timeout=60)
        assert json.loads(out.stdout) == sp.decode(ids[1:]) == t
