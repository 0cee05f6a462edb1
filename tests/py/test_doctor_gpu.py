"""`strata doctor`'s "GPU activations" line: whether a CUDA worker's
activations would move GPU to GPU over UCX's CUDA memory support
(GPUDirect RDMA, cuda_ipc) or be staged through pinned host memory, with
the reason. The line must agree with doctor's own memory-type and RDMA
lines and with `ucx_info -d` (an independent reading of the same UCX),
whatever the host; on a host without GPU or RDMA it says staged.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STRATA = os.environ.get("STRATA_BIN", str(ROOT / "build" / "bin" / "strata"))


def doctor(*args: str) -> str:
    if not os.access(STRATA, os.X_OK):
        pytest.skip(f"strata binary not built at {STRATA}")
    r = subprocess.run([STRATA, "doctor", *args], capture_output=True, text=True, timeout=60)
    if "built without UCX" in r.stdout:
        pytest.skip("strata built without UCX")
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def field(out: str, name: str) -> str:
    m = re.search(rf"^  {re.escape(name)}\s+(.*)$", out, re.M)
    assert m, f"no '{name}' line in:\n{out}"
    return m.group(1)


def ucx_cuda_transports() -> set[str] | None:
    exe = shutil.which("ucx_info")
    if not exe:
        return None
    r = subprocess.run([exe, "-d"], capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        return None
    return set(re.findall(r"Transport:\s*(cuda_copy|cuda_ipc|gdr_copy)\b", r.stdout))


def test_gpu_activations_line():
    out = doctor()
    lines = [l for l in out.splitlines() if l.startswith("  GPU activations")]
    assert len(lines) == 1, out
    line = field(out, "GPU activations")
    assert line.startswith(("GPU to GPU:", "staged through pinned host memory")), line
    cuda_in_ucx = field(out, "CUDA memory in UCX").startswith("yes")
    rdma = field(out, "RDMA (rc/dc/ud)").startswith("yes")
    gpudirect = field(out, "GPUDirect RDMA").startswith("yes")

    if not cuda_in_ucx:
        # UCX cannot take device pointers: staged, with the reason.
        assert line.startswith("staged through pinned host memory: "), line
        assert ("no CUDA memory domain" in line) or ("does not take CUDA memory" in line), line
    if not rdma:
        assert "no RDMA transport (rc/dc/ud verbs)" in line, line
    if gpudirect:
        assert line.startswith("GPU to GPU:") and "GPUDirect RDMA" in line, line
    else:
        assert "GPUDirect RDMA (" not in line, line
    # the honest footnote: workers do not hand device buffers over yet
    assert "workers still send host copies of activations" in out


def test_agrees_with_ucx_info():
    found = ucx_cuda_transports()
    if found is None:
        pytest.skip("ucx_info not installed")
    line = field(doctor(), "GPU activations")
    if not found:
        # no CUDA transport in this UCX at all (this machine: no GPU, no ucx-cuda)
        assert line.startswith("staged through pinned host memory: this UCX has no CUDA "
                               "memory domain"), line
    else:
        assert "no CUDA memory domain" not in line, line


def test_line_under_tls_override():
    # A UCX_TLS without CUDA transports must still give a verdict, never GPU to GPU.
    line = field(doctor("--tls", "tcp,self"), "GPU activations")
    assert line.startswith("staged through pinned host memory"), line
