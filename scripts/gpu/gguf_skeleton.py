#!/usr/bin/env python3
"""Cut a GGUF model down to its skeleton, or fill a skeleton back out to a loadable model.

The skeleton is the GGUF file's header, metadata (vocabulary included) and tensor table: the
same names, shapes and types, with no tensor data (a few MB instead of hundreds). `fill` appends
the data section again, every byte set to FILL_BYTE, so llama.cpp loads a model of exactly the
original layout. Speed depends on shapes and types, not on values, which is why a benchmark may
run on a filled skeleton; its *text* is meaningless. Standard library only, so it runs on a
machine with no pip and no network.

    gguf_skeleton.py cut  MODEL.gguf SKELETON.gguf
    gguf_skeleton.py fill SKELETON.gguf MODEL.gguf
    gguf_skeleton.py info FILE.gguf
"""
import os
import struct
import sys

# Block sizes and bytes per block of the ggml types a Gemma GGUF uses (type id: (block, bytes)).
TYPES = {
    0: (1, 4), 1: (1, 2), 2: (32, 18), 3: (32, 20), 6: (32, 22), 7: (32, 24), 8: (32, 34),
    10: (256, 84), 11: (256, 110), 12: (256, 144), 13: (256, 176), 14: (256, 210), 15: (256, 292),
    30: (1, 2),
}
# A byte that makes small, finite numbers in every quantised format (no NaN, no Inf).
FILL_BYTE = 0x11
SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}


class Reader:
    def __init__(self, f):
        self.f = f

    def take(self, fmt):
        size = struct.calcsize(fmt)
        data = self.f.read(size)
        if len(data) != size:
            raise SystemExit(f"error: {self.f.name} ends inside its header: not a whole GGUF file")
        return struct.unpack(fmt, data)[0]

    def string(self):
        n = self.take("<Q")
        return self.f.read(n).decode("utf-8", "replace")

    def value(self, kind):
        if kind == 8:
            return self.string()
        if kind == 9:
            inner, n = self.take("<I"), self.take("<Q")
            if inner in SIZES:
                self.f.seek(SIZES[inner] * n, 1)
                return None
            return [self.value(inner) for _ in range(n)]
        fmt = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}[kind]
        return self.take(fmt)


def layout(path):
    """Returns (data_start, data_end, tensor_count, architecture) of a GGUF file."""
    with open(path, "rb") as f:
        r = Reader(f)
        if f.read(4) != b"GGUF":
            raise SystemExit(f"error: {path} is not a GGUF file")
        version = r.take("<I")
        if version < 2:
            raise SystemExit(f"error: {path} is GGUF version {version}; only 2 and 3 are read")
        tensors, kvs = r.take("<Q"), r.take("<Q")
        alignment, arch = 32, None
        for _ in range(kvs):
            key = r.string()
            val = r.value(r.take("<I"))
            if key == "general.alignment":
                alignment = int(val)
            if key == "general.architecture":
                arch = val
        end = 0
        for _ in range(tensors):
            r.string()
            dims = [r.take("<Q") for _ in range(r.take("<I"))]
            kind, offset = r.take("<I"), r.take("<Q")
            if kind not in TYPES:
                raise SystemExit(f"error: {path} has a tensor of ggml type {kind}, which this script does not know")
            block, size = TYPES[kind]
            count = 1
            for d in dims:
                count *= d
            end = max(end, offset + count // block * size)
        here = f.tell()
        start = (here + alignment - 1) // alignment * alignment
        return start, start + end, tensors, arch


def main(argv):
    if len(argv) < 2 or argv[0] not in ("cut", "fill", "info"):
        raise SystemExit(__doc__)
    command, src = argv[0], argv[1]
    start, end, tensors, arch = layout(src)
    if command == "info":
        print(f"{src}: {arch}, {tensors} tensors, data {start}..{end} ({end} bytes when whole, {os.path.getsize(src)} now)")
        return
    if len(argv) != 3:
        raise SystemExit(__doc__)
    dst = argv[2]
    with open(src, "rb") as f:
        head = f.read(start)
    with open(dst + ".part", "wb") as out:
        out.write(head)
        if command == "fill":
            chunk = bytes([FILL_BYTE]) * (1 << 20)
            left = end - start
            while left > 0:
                out.write(chunk[: min(left, len(chunk))])
                left -= min(left, len(chunk))
    os.replace(dst + ".part", dst)
    print(f"{dst}: {arch}, {tensors} tensors, {os.path.getsize(dst)} bytes")


if __name__ == "__main__":
    main(sys.argv[1:])
