#!/usr/bin/env python3
"""Warm MiniMax-M3's MSA kernel JIT cache in one process (Blackwell only).

On Blackwell (SM100 family) SGLang runs M3's sparse attention through the MSA kernel
(``fmha_sm100``), which JIT-compiles on first use; a multi-GPU launch with a cold cache can
crash a rank (``Module has no function 'plan'``, reference/production.md). This script runs
one tiny MSA prefill on GPU 0 (bf16, then fp8 KV when supported) so that the compiled kernels
are in the cache before the multi-GPU start. It runs with the venv's python and prints one JSON
line: {"ok": bool, "warmed": [...], "skipped": reason | null, "error": text | null}.
Exit 0 warmed or skipped (no SM100 GPU, MSA not installed: SGLang uses its Triton path),
1 the kernel failed (set SGLANG_DISABLE_MSA=1 for the Triton path).
"""

import json
import sys
import time


def main() -> int:
    out = {"ok": True, "warmed": [], "skipped": None, "error": None}
    try:
        import torch
        from sglang.srt.layers.attention.minimax_sparse_ops import msa
    except Exception as exc:  # no torch/sglang: nothing to warm
        out.update(skipped=f"cannot import sglang's MSA adapter: {type(exc).__name__}: {exc}")
        print(json.dumps(out))
        return 0
    if not torch.cuda.is_available():
        out.update(skipped="no CUDA device")
    elif torch.cuda.get_device_capability()[0] != 10:
        out.update(skipped=f"compute capability {torch.cuda.get_device_capability()} is not SM100 (Blackwell)")
    elif not msa.msa_available():
        out.update(skipped="fmha_sm100 (MSA) is not importable: SGLang uses its Triton sparse path")
    if out["skipped"]:
        print(json.dumps(out))
        return 0
    dev = torch.device("cuda:0")
    page, heads, kv_heads, dim, q_len = 128, 8, 1, 128, 128
    for dtype in (torch.bfloat16, torch.float8_e4m3fn):
        start = time.monotonic()
        try:
            q = torch.randn(q_len, heads, dim, device=dev).to(dtype)
            k = torch.randn(2 * page, kv_heads, dim, device=dev).to(dtype)
            v = torch.randn(2 * page, kv_heads, dim, device=dev).to(dtype)
            topk = torch.zeros(kv_heads, q_len, 1, dtype=torch.int32, device=dev)
            req_to_token = torch.arange(2 * page, dtype=torch.int32, device=dev).unsqueeze(0)
            msa.msa_sparse_prefill_main(
                q, k, v, topk, req_to_token,
                slot_ids=torch.zeros(1, dtype=torch.int64, device=dev),
                cu_seqlens=torch.tensor([0, q_len], dtype=torch.int32, device=dev),
                seq_lens=torch.tensor([q_len], dtype=torch.int32, device=dev),
                prefix_lens=torch.zeros(1, dtype=torch.int32, device=dev),
                block_size_k=page,
            )
            torch.cuda.synchronize()
            out["warmed"].append(f"{str(dtype).removeprefix('torch.')} {time.monotonic() - start:.1f}s")
        except Exception as exc:
            if dtype is torch.bfloat16:  # the path M3 takes by default: a real failure
                out.update(ok=False, error=f"{type(exc).__name__}: {exc}")
                break
            out["warmed"].append(f"{str(dtype).removeprefix('torch.')} not supported here: {type(exc).__name__}")
    print(json.dumps(out))
    return 0 if out["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
