#!/usr/bin/env python3
"""Writes a small Gemma-3-style vision projector GGUF with random weights, for the tests.

No vision Gemma weights can be downloaded where gemmactl is tested, so the image path is tested
with a projector that is structurally what llama.cpp's multimodal library (mtmd) loads for Gemma 3:
a SigLIP-like vision encoder (patch embedding, learned positions, pre-norm transformer blocks
with a GELU feed-forward, a final layer norm), then Gemma 3's projector (average pooling of the
patch grid, an RMS norm, a linear map into the text model's embedding space). Only its sizes are
small (a 64-pixel image, 8-pixel patches, 2 blocks 64 wide), so an image is encoded in
milliseconds. The weights are random with a fixed seed: the file is the same on every machine,
and what a model "sees" through it means nothing; the tests check the plumbing, not answers.

    make-test-projector.py OUT.gguf [--embedding 640]

--embedding is the text model's embedding length the projector maps into (Gemma 3 270M: 640); a
different value makes a projector that does not fit that model, for the mismatch test. Needs the
`gguf` and `numpy` packages (scripts/test.sh installs them in the test virtual environment).
"""

import argparse
import os
import sys

import numpy as np
import gguf

IMAGE_SIZE = 64
PATCH_SIZE = 8
# Gemma 3 pools the patch grid by this factor on each side: (64 / 8 / 2)^2 = 16 image tokens.
POOL = 2
WIDTH = 64
HEADS = 4
FEED_FORWARD = 128
BLOCKS = 2
EPS = 1e-6
SEED = 1803


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out")
    parser.add_argument("--embedding", type=int, default=640)
    args = parser.parse_args()

    rng = np.random.default_rng(SEED + args.embedding)

    def dense(rows: int, cols: int) -> np.ndarray:
        # numpy's shape is ggml's reversed: (rows, cols) is a ggml matrix of ne = [cols, rows],
        # which maps a `cols`-long vector to a `rows`-long one. Scaled so activations stay near 1.
        return (rng.standard_normal((rows, cols)) / np.sqrt(cols)).astype(np.float32)

    def vector(n: int, around: float = 0.0, spread: float = 0.02) -> np.ndarray:
        return (around + spread * rng.standard_normal(n)).astype(np.float32)

    patches = (IMAGE_SIZE // PATCH_SIZE) ** 2
    tmp = args.out + ".part"
    writer = gguf.GGUFWriter(tmp, "clip")
    writer.add_name("gemmactl test projector (random weights)")
    writer.add_description(
        "Structurally a Gemma 3 vision projector, with random weights: for tests only"
    )
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_string("clip.projector_type", "gemma3")
    writer.add_bool("clip.has_vision_encoder", True)
    writer.add_bool("clip.use_gelu", True)
    writer.add_uint32("clip.vision.image_size", IMAGE_SIZE)
    writer.add_uint32("clip.vision.patch_size", PATCH_SIZE)
    writer.add_uint32("clip.vision.embedding_length", WIDTH)
    writer.add_uint32("clip.vision.feed_forward_length", FEED_FORWARD)
    writer.add_uint32("clip.vision.block_count", BLOCKS)
    writer.add_uint32("clip.vision.attention.head_count", HEADS)
    writer.add_float32("clip.vision.attention.layer_norm_epsilon", EPS)
    writer.add_uint32("clip.vision.projection_dim", args.embedding)
    writer.add_uint32("clip.vision.projector.scale_factor", POOL)
    writer.add_array("clip.vision.image_mean", [0.5, 0.5, 0.5])
    writer.add_array("clip.vision.image_std", [0.5, 0.5, 0.5])

    # Patch embedding: a convolution with a patch-sized kernel and stride (ggml ne [8, 8, 3, 64]).
    kernel = rng.standard_normal((WIDTH, 3, PATCH_SIZE, PATCH_SIZE)) / np.sqrt(3 * PATCH_SIZE**2)
    writer.add_tensor("v.patch_embd.weight", kernel.astype(np.float32))
    writer.add_tensor("v.patch_embd.bias", vector(WIDTH))
    writer.add_tensor("v.position_embd.weight", vector(patches * WIDTH, spread=0.5).reshape(patches, WIDTH))
    for b in range(BLOCKS):
        p = f"v.blk.{b}"
        writer.add_tensor(f"{p}.ln1.weight", vector(WIDTH, around=1.0))
        writer.add_tensor(f"{p}.ln1.bias", vector(WIDTH))
        for name in ("attn_q", "attn_k", "attn_v", "attn_out"):
            writer.add_tensor(f"{p}.{name}.weight", dense(WIDTH, WIDTH))
            writer.add_tensor(f"{p}.{name}.bias", vector(WIDTH))
        writer.add_tensor(f"{p}.ln2.weight", vector(WIDTH, around=1.0))
        writer.add_tensor(f"{p}.ln2.bias", vector(WIDTH))
        writer.add_tensor(f"{p}.ffn_up.weight", dense(FEED_FORWARD, WIDTH))
        writer.add_tensor(f"{p}.ffn_up.bias", vector(FEED_FORWARD))
        writer.add_tensor(f"{p}.ffn_down.weight", dense(WIDTH, FEED_FORWARD))
        writer.add_tensor(f"{p}.ffn_down.bias", vector(WIDTH))
    writer.add_tensor("v.post_ln.weight", vector(WIDTH, around=1.0))
    writer.add_tensor("v.post_ln.bias", vector(WIDTH))
    # Gemma 3's projector: RMS norm weight, then the map into the text model's embeddings
    # (ggml ne [embedding, 64]; llama.cpp transposes it before use).
    writer.add_tensor("mm.soft_emb_norm.weight", vector(WIDTH, around=1.0))
    # numpy shape (64, embedding); fan-in 64, so each output element comes out near 1.
    projection = rng.standard_normal((WIDTH, args.embedding)) / np.sqrt(WIDTH)
    writer.add_tensor("mm.input_projection.weight", projection.astype(np.float32))

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    # Renamed only when complete, so a test never loads half a file.
    os.replace(tmp, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
