# bench/gpu/gpu_tool.cmake - the `strata-gpu` tool used by bench/gpu/check.sh:
# writes random Llama-shaped GGUF models, compares the CUDA backend with the
# CPU one, and benchmarks decode/prefill against the device's own copy
# bandwidth and cuBLAS GEMM ceiling.
#
# Included (deferred) from kernels/cuda/CMakeLists.txt at the end of the
# top-level directory, so it exists only in CUDA builds and sees st_worker.
add_executable(strata-gpu
  ${CMAKE_SOURCE_DIR}/bench/gpu/gpu_tool.c
  ${CMAKE_SOURCE_DIR}/bench/gpu/gpu_gen.c)
target_link_libraries(strata-gpu PRIVATE st_worker st_model st_kernels st_kernels_cuda st_common m)
set_target_properties(strata-gpu PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/bin)
