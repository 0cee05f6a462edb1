"""Prefix reuse (docs/CLUSTER.md, "Prefix reuse"): requests sharing a prompt
prefix load its KV rows instead of computing them. Greedy text must be what
`strata generate` (no cache at all) gives; /metrics must show the hits; a
small pool must evict least-recently-used blocks and stay correct; in the
cluster each stage keeps its layers' rows, and a re-plan (a worker killed)
empties the cache instead of loading rows that are gone."""
import concurrent.futures
import os
import signal
import subprocess
import time

import pytest
import requests

from test_http_common import ROOT, Server, need_model, reference

# A prefix of several 32-token blocks, like a shared system prompt.
PREFIX = open(os.path.join(ROOT, "docs", "ARCHITECTURE.md")).read()[:1000] + "\n\n"
QUESTIONS = ["Question: what are the layers?\nAnswer:",
             "Question: which launchers exist?\nAnswer:",
             "Question: how does a stage run?\nAnswer:"]
N = 12


def complete(srv, prompt, n=N):
    r = requests.post(srv.url + "/v1/completions", json={
        "prompt": prompt, "max_tokens": n, "temperature": 0}, timeout=300)
    assert r.status_code == 200, r.text
    return r.json()["choices"][0]["text"]


def pfx(srv):
    m = srv.metrics()
    return {k[len("strata_prefix_cache_"):]: v for k, v in m.items()
            if k.startswith("strata_prefix_cache_")}


@pytest.fixture(scope="module")
def refs():
    need_model()
    return {q: reference(PREFIX + q, N) for q in QUESTIONS}


def test_reuse_gives_the_same_text_and_counts_hits(refs):
    srv = Server()
    try:
        m0 = pfx(srv)
        assert m0["blocks"] > 0 and m0["block_tokens"] == 32
        assert complete(srv, PREFIX + QUESTIONS[0]) == refs[QUESTIONS[0]]
        m1 = pfx(srv)
        assert m1["hit_tokens_total"] == 0 and m1["blocks_used"] > 0
        assert complete(srv, PREFIX + QUESTIONS[1]) == refs[QUESTIONS[1]]
        m2 = pfx(srv)
        looked = m2["lookup_tokens_total"] - m1["lookup_tokens_total"]
        hit = m2["hit_tokens_total"] - m1["hit_tokens_total"]
        # The shared text is most of the prompt: all its whole blocks hit.
        assert hit >= looked - 64 - 32, (hit, looked)
        assert hit % 32 == 0
        # The same prompt again: its own rows and those of its answer are cached.
        assert complete(srv, PREFIX + QUESTIONS[0]) == refs[QUESTIONS[0]]
        m3 = pfx(srv)
        assert m3["hit_tokens_total"] - m2["hit_tokens_total"] >= looked - 32
        assert 0 < m3["hit_ratio"] < 1
        assert m3["flushes_total"] == 0
    finally:
        srv.stop()


def test_reuse_off_matches_and_counts_nothing(refs):
    srv = Server("--prefix-cache", "0")
    try:
        for q in QUESTIONS[:2]:
            assert complete(srv, PREFIX + q) == refs[q]
        m = pfx(srv)
        assert m["blocks"] == 0 and m["hit_tokens_total"] == 0
    finally:
        srv.stop()


def test_chat_history_is_reused_and_text_unchanged():
    """Turn 2 of a conversation repeats turn 1 (system, user, the answer):
    those rows come from the cache, and the reply is the one a server
    without the cache gives."""
    sys_msg = {"role": "system", "content": PREFIX}
    turn1 = [sys_msg, {"role": "user", "content": "What is strata?"}]
    out = {}
    for args in ((), ("--prefix-cache", "0")):
        srv = Server(*args)
        try:
            def chat(msgs):
                r = requests.post(srv.url + "/v1/chat/completions", json={
                    "messages": msgs, "max_tokens": N, "temperature": 0}, timeout=300)
                assert r.status_code == 200, r.text
                return r.json()["choices"][0]["message"]["content"], r.json()["usage"]
            a1, u1 = chat(turn1)
            before = pfx(srv)
            turn2 = turn1 + [{"role": "assistant", "content": a1},
                             {"role": "user", "content": "And what runs the layers?"}]
            a2, _ = chat(turn2)
            after = pfx(srv)
            out[args] = (a1, a2, after["hit_tokens_total"] - before["hit_tokens_total"],
                         u1["prompt_tokens"])
        finally:
            srv.stop()
    with_cache, without = out[()], out[("--prefix-cache", "0")]
    assert with_cache[:2] == without[:2]
    # At least turn 1's whole prompt blocks were loaded, not computed.
    assert with_cache[2] >= (with_cache[3] // 32) * 32 - 32, with_cache
    assert without[2] == 0


def test_small_pool_evicts_lru_and_stays_correct(refs):
    """4 MiB holds 5 blocks of SmolLM2's f16 rows (30 layers x 2 x 576 x 2
    bytes x 32 tokens = 2.2 MB... per block 737 KB): a second prompt's
    blocks evict the first's, which then misses."""
    srv = Server("--prefix-cache", "4")
    try:
        m = pfx(srv)
        assert m["blocks"] == 5, m
        other = "Ein ganz anderer Text, damit nichts geteilt wird. " * 12
        ref_other = reference(other, N)
        assert complete(srv, PREFIX + QUESTIONS[0]) == refs[QUESTIONS[0]]
        assert complete(srv, other) == ref_other
        m1 = pfx(srv)
        assert m1["evictions_total"] > 0 and m1["blocks_used"] <= 5
        assert complete(srv, PREFIX + QUESTIONS[1]) == refs[QUESTIONS[1]]
        assert complete(srv, other) == ref_other
        m2 = pfx(srv)
        assert m2["evictions_total"] > m1["evictions_total"]
    finally:
        srv.stop()


def test_concurrent_requests_sharing_a_prefix(refs):
    """Six at once, three prompts over one prefix: saves in flight are
    never loaded (they may run out of order on a stage), every answer is
    generate's."""
    srv = Server("--workers", "2")
    try:
        jobs = [QUESTIONS[i % 3] for i in range(6)]
        with concurrent.futures.ThreadPoolExecutor(6) as ex:
            got = list(ex.map(lambda q: complete(srv, PREFIX + q), jobs))
        assert got == [refs[q] for q in jobs]
        # Once they are in, a later one hits.
        m1 = pfx(srv)
        assert complete(srv, PREFIX + QUESTIONS[2]) == refs[QUESTIONS[2]]
        assert pfx(srv)["hit_tokens_total"] > m1["hit_tokens_total"]
    finally:
        srv.stop()


def children(pid):
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


def test_cluster_replan_empties_the_cache(refs):
    """Each stage holds its layers' rows: a killed worker's are gone with it.
    After the restart and re-plan the next request must not load them: it
    misses (the cache was emptied) and its text is still generate's."""
    srv = Server("--workers", "2")
    try:
        assert complete(srv, PREFIX + QUESTIONS[0]) == refs[QUESTIONS[0]]
        assert complete(srv, PREFIX + QUESTIONS[1]) == refs[QUESTIONS[1]]
        m1 = pfx(srv)
        assert m1["hit_tokens_total"] > 0
        kids = children(srv.proc.pid)
        assert len(kids) == 2, kids
        os.kill(kids[-1], signal.SIGKILL)
        deadline = time.time() + 60
        while time.time() < deadline:   # the worker is restarted, the cluster re-plans
            if len(children(srv.proc.pid)) == 2 and srv.metrics().get(
                    "strata_engine_healthy") == 1 and srv.metrics().get(
                    "strata_worker_restarts_total", 0) >= 1:
                break
            time.sleep(0.3)
        else:
            pytest.fail("the cluster did not come back")
        assert complete(srv, PREFIX + QUESTIONS[1]) == refs[QUESTIONS[1]]
        m2 = pfx(srv)
        assert m2["flushes_total"] >= 1
        assert m2["hit_tokens_total"] == m1["hit_tokens_total"]   # a miss
        assert complete(srv, PREFIX + QUESTIONS[2]) == refs[QUESTIONS[2]]
        m3 = pfx(srv)
        assert m3["hit_tokens_total"] > m2["hit_tokens_total"], (m2, m3, srv.stop()[2][-3000:])
    finally:
        srv.stop()


def test_gemma3_sliding_window_and_q8_0_cache():
    """Gemma 3 (sliding-window layers, one KV head) with a q8_0 cache: the
    pool keeps the quantized rows as they are; the text is generate's."""
    gemma = os.environ.get("STRATA_GEMMA3",
                           os.path.expanduser("~/.cache/strata/gemma-3-270m-q4_k_m.gguf"))
    if not os.path.exists(gemma):
        pytest.skip("Gemma 3 270M not in the cache (scripts/fetch-model.sh gemma3)")
    from test_http_common import BIN
    pre = open(os.path.join(ROOT, "docs", "CLUSTER.md")).read()[:1200]
    qs = ["\nThe Eiffel Tower is located in the city of", "\nThe capital of Italy is"]
    srv = Server("--kv-type", "q8_0", model=gemma)
    try:
        for q in qs:
            want = subprocess.run([BIN, "generate", "-m", gemma, "-p", pre + q, "-n", str(N),
                                   "--temp", "0", "-t", "2", "--kv-type", "q8_0"],
                                  capture_output=True, text=True, timeout=120).stdout[:-1]
            assert complete(srv, pre + q) == want
        assert pfx(srv)["hit_tokens_total"] > 0
    finally:
        srv.stop()
