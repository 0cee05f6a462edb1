"""The new architectures through every way a cluster is started, on the
tiny reference models of tests/tools/arch_ref.py (test_arch_ref.py checks
them against transformers and runs `coordinator --local N`):

- coordinator + `worker --join` with workers that have no copy of the file:
  the MoE/MLA tensors (stacked experts, attn_k_b/attn_v_b, router, bias)
  are streamed as shards, each worker receiving only its own layers';
- an encrypted DeepSeek-shaped model in a local cluster;
- `mpirun -n 3 strata launch` and a real one-node Slurm (sbatch);
each answer equal to single-process `strata generate` on the plain file."""
import os
import shutil

import pytest

from conftest import ROOT, run
from test_cluster_shard import run_cluster, streamed_bytes
from test_cluster_standalone import PROMPT, N, free_port, reference, secret  # noqa: F401

pytest.importorskip("torch")
pytest.importorskip("transformers")
import arch_ref  # noqa: E402


@pytest.fixture(scope="module")
def ds3():
    return str(arch_ref.ensure("deepseek3")["gguf"])


def _cluster_built(strata):
    return run([strata, "worker", "--help"]).returncode == 0


@pytest.mark.parametrize("case,split", [("deepseek3", "1,2"), ("gemma3", "4,2")])
def test_joined_workers_stream_their_shards(strata, secret, case, split):  # noqa: F811
    if not _cluster_built(strata):
        pytest.skip("strata built without cluster support")
    model = str(arch_ref.ensure(case)["gguf"])
    want = reference(strata, model)
    rc, out, err, results = run_cluster(strata, model, secret,
                                        ["-m", "/nonexistent/strata/model.gguf"], split=split)
    assert rc == 0, err[-3000:]
    assert out.rstrip("\n") == want.rstrip("\n")
    size = os.path.getsize(model)
    total = 0
    for wrc, werr, _ in results:
        assert wrc == 0, werr[-3000:]
        got = streamed_bytes(werr)
        assert got < 0.9 * size, (got, size)   # its share, not the file
        total += got
    # together the two shards cover the layers (the embedding and head may
    # be sent to both ends)
    assert total > 0.5 * size


def test_encrypted_moe_model_in_a_local_cluster(strata, ds3, tmp_path):
    if not _cluster_built(strata):
        pytest.skip("strata built without cluster support")
    key, enc = tmp_path / "k", tmp_path / "m.stenc"
    r = run([strata, "encrypt-model", "--gen-key", str(key)])
    assert r.returncode == 0, r.stderr
    r = run([strata, "encrypt-model", ds3, str(enc), "--key-file", str(key)])
    if r.returncode == 1 and "without OpenSSL" in r.stderr:
        pytest.skip("strata built without OpenSSL")
    assert r.returncode == 0, r.stderr
    want = reference(strata, ds3)
    r = run([strata, "coordinator", "-m", str(enc), "--key-file", str(key), "--local", "2",
             "-t", "1", "-p", PROMPT, "-n", str(N), "--temp", "0", "--stats"], timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "cluster: 2 stages" in r.stderr
    assert r.stdout.rstrip("\n") == want.rstrip("\n")


def test_mpirun_launch_moe(strata, ds3, tmp_path):
    if not shutil.which("mpirun"):
        pytest.skip("mpirun (MPICH) is not installed")
    if run([strata, "launch", "--help"]).returncode != 0:
        pytest.skip("strata built without cluster support")
    sec = tmp_path / "secret"
    sec.write_text("mpi-secret-0123456789abcdef\n")
    want = reference(strata, ds3)
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=0")   # MPICH's MPI_Init (test_cluster_mpi.py)
    r = run(["mpirun", "-n", "3", strata, "launch", "-m", ds3, "--secret-file", str(sec),
             "--control-port", str(free_port()), "--advertise", "127.0.0.1", "--data-listen",
             "127.0.0.1:0", "-p", PROMPT, "-n", str(N), "-t", "1"], timeout=180, env=env)
    if "built without MPI" in r.stderr or "not started by mpirun" in r.stderr:
        pytest.skip("strata built without MPI: " + r.stderr.strip()[-200:])
    assert r.returncode == 0, r.stderr[-4000:]
    assert r.stdout.rstrip("\n") == want.rstrip("\n")
    assert "rank 0 of 3" in r.stderr


def test_slurm_sbatch_moe(strata, ds3):
    script = ROOT / "tests" / "slurm" / "run_slurm_test.sh"
    env = dict(os.environ, ASAN_OPTIONS=os.environ.get("ASAN_OPTIONS", "") + ":detect_leaks=0")
    r = run(["bash", str(script), strata, ds3], timeout=400, env=env)
    if r.returncode == 77:
        pytest.skip(r.stdout.strip().splitlines()[-1] if r.stdout.strip() else "skipped")
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    assert "PASS" in r.stdout
