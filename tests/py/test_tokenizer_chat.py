"""Chat prompts of `strata tokenize --chat` against the model's own Jinja
template (tokenizer.chat_template in the GGUF) executed by jinja2, the way
transformers' apply_chat_template runs it: the rendered text must be
byte-identical, and its ids equal Hugging Face `tokenizers` on that text with
the control tokens parsed.

Interface used: `strata tokenize -m M --chat --msg ROLE=CONTENT ...
[--no-gen] --render --json` prints the prompt as a JSON string; without
--render it prints the prompt's ids.

Needs: STRATA_MODEL (SmolLM2-135M-Instruct GGUF), pip packages jinja2 and gguf
(tokenizers for the ids).
"""
import json
import os
import subprocess
from pathlib import Path

import pytest

jinja2 = pytest.importorskip("jinja2", reason="pip package jinja2 not installed")
gguf = pytest.importorskip("gguf", reason="pip package gguf not installed")

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_MODEL = Path.home() / ".cache" / "strata" / "SmolLM2-135M-Instruct.Q4_1.gguf"

CONVERSATIONS = [
    [("user", "Hi there!")],
    [("system", "You are terse."), ("user", "What is 2+2?")],
    [("user", "Tell me a joke."), ("assistant", "Why did the GPU cross the road?"), ("user", "Why?")],
    [("system", "Réponds en français.\nSois bref."), ("user", "Quelle heure est-il ? 😀"),
     ("assistant", "Il est midi."), ("user", "  spaces  and\nnewlines\n")],
    [("user", "multi\n\nparagraph\n\n\ncontent with <angle> brackets and 'quotes'")],
]


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
def template(model):
    r = gguf.GGUFReader(model)
    f = r.fields["tokenizer.chat_template"]
    src = bytes(f.parts[f.data[0]]).decode("utf-8")
    # as transformers does: trim_blocks/lstrip_blocks, raise_exception available
    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=False)

    def raise_exception(msg):
        raise jinja2.TemplateError(msg)

    env.globals["raise_exception"] = raise_exception
    return env.from_string(src)


def strata_render(strata, model, conv, gen, render=True):
    args = [strata, "tokenize", "-m", model, "--chat", "--json"]
    for role, content in conv:
        args += ["--msg", f"{role}={content}"]
    if not gen:
        args.append("--no-gen")
    if render:
        args.append("--render")
    out = subprocess.run(args, capture_output=True, check=True, timeout=60)
    return json.loads(out.stdout)


@pytest.mark.parametrize("gen", [True, False])
@pytest.mark.parametrize("idx", range(len(CONVERSATIONS)))
def test_render_matches_jinja(strata, model, template, idx, gen):
    conv = CONVERSATIONS[idx]
    want = template.render(messages=[{"role": r, "content": c} for r, c in conv],
                           add_generation_prompt=gen, bos_token="<|im_start|>", eos_token="<|im_end|>")
    assert strata_render(strata, model, conv, gen) == want


def test_default_system_prompt(strata, model):
    info = subprocess.run([strata, "tokenize", "-m", model, "--info"], capture_output=True, check=True, text=True)
    assert "chat chatml\n" in info.stdout
    assert "default_system You are a helpful AI assistant named SmolLM, trained by Hugging Face\n" in info.stdout


def test_prompt_ids_match_reference(strata, model, template):
    tokenizers = pytest.importorskip("tokenizers", reason="pip package tokenizers not installed")
    from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers
    r = gguf.GGUFReader(model)

    def arr(key):
        f = r.fields[key]
        return [f.parts[i] for i in f.data]

    toks = [bytes(p).decode() for p in arr("tokenizer.ggml.tokens")]
    types = [int(p[0]) for p in arr("tokenizer.ggml.token_type")]
    merges = [tuple(bytes(p).decode().split(" ", 1)) for p in arr("tokenizer.ggml.merges")]
    tk = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(toks)}, merges=merges))
    tk.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                pre_tokenizers.ByteLevel(add_prefix_space=False)])
    tk.add_special_tokens([AddedToken(t, special=True, normalized=False) for t, ty in zip(toks, types) if ty == 3])
    for conv in CONVERSATIONS:
        text = template.render(messages=[{"role": r, "content": c} for r, c in conv], add_generation_prompt=True)
        assert strata_render(strata, model, conv, True, render=False) == tk.encode(text, add_special_tokens=False).ids
