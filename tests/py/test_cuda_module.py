"""The strata binary links no CUDA library: the CUDA backend is the module
libstrata_cuda.so, loaded with dlopen when asked for. On a machine without a
GPU, asking for it must fail cleanly with a clear message (no crash), and
the CPU path must not load CUDA at all."""
import subprocess

import pytest

from conftest import run


def built_with_cuda(strata):
    return "cuda" in run([strata, "version"]).stdout.split("backends:")[1].split("\n")[0]


def test_binary_does_not_link_cuda(strata):
    out = subprocess.run(["ldd", strata], capture_output=True, text=True).stdout
    assert "libcublas" not in out and "libcudart" not in out, out


def test_cuda_backend_without_gpu_fails_cleanly(strata, real_model):
    if not built_with_cuda(strata):
        pytest.skip("built without the CUDA backend (no nvcc)")
    r = run([strata, "generate", "-m", real_model, "-p", "hi", "-n", "2", "--backend", "cuda"])
    if r.returncode == 0:
        pytest.skip("a CUDA device is present: bench/gpu/check.sh covers it")
    assert r.returncode == 1
    assert "cuda" in r.stderr and "device" in r.stderr, r.stderr
    assert "Segmentation" not in r.stderr and "Abort" not in r.stderr
