#!/usr/bin/env python3
"""Write tests/kernels/data/dequant_golden.bin: random blocks of every
block-quantized type and their values as the `gguf` package (gguf-py,
llama.cpp's Python reference) dequantizes them. test_kernels_dtype.c checks
st_dtype_dequantize_row against it, so the C reference the kernels are
tested with is itself checked against an independent implementation.

    python3 tests/kernels/gen_dequant_golden.py [out.bin]

Format (little endian): "STDQ", u32 entries; per entry u32 ggml type,
u32 values, u32 bytes, the block bytes, then float32 values. Seeded: the
same gguf-py gives the same file.
"""
import struct
import sys

import numpy as np

import gguf
from gguf import GGMLQuantizationType as QT

# fp16 fields of each block (byte offsets): set to small finite values,
# since random bytes there could be inf/nan.
F16_FIELDS = {
    QT.Q4_0: [0], QT.Q4_1: [0, 2], QT.Q5_0: [0], QT.Q5_1: [0, 2], QT.Q8_0: [0],
    QT.Q2_K: [80, 82], QT.Q3_K: [108], QT.Q4_K: [0, 2], QT.Q5_K: [0, 2], QT.Q6_K: [208],
}


def main() -> int:
    out = sys.argv[1] if len(sys.argv) > 1 else "tests/kernels/data/dequant_golden.bin"
    rng = np.random.default_rng(20240601)
    entries = []
    for qt, fields in F16_FIELDS.items():
        elems, size = gguf.GGML_QUANT_SIZES[qt]
        nb = 4 if elems == 256 else 16
        blocks = rng.integers(0, 256, size=(nb, size), dtype=np.uint8)
        for off in fields:
            d = (rng.random(nb) * 0.1 - 0.03).astype(np.float16)
            blocks[:, off:off + 2] = d.view(np.uint8).reshape(nb, 2)
        vals = gguf.quants.dequantize(blocks.reshape(-1), qt).reshape(-1).astype("<f4")
        entries.append(struct.pack("<III", int(qt), vals.size, blocks.size) + blocks.tobytes()
                       + vals.tobytes())
    with open(out, "wb") as f:
        f.write(b"STDQ" + struct.pack("<I", len(entries)) + b"".join(entries))
    return 0


if __name__ == "__main__":
    sys.exit(main())
