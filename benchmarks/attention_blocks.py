"""Forward+backward of one attention block at SmolLM2-135M's shapes, per kernel and precision, on this CPU.

The blocks are the ones prefix sharing makes (a prompt causally; a completion over [prompt; itself]); the question
is which attention to run under CPU bf16 autocast (``sharing._attend``; docs/decisions.md, "The attention kernel
under CPU bf16"). Kernels: SDPA (the CPU flash kernel) and the eager computation (scores by matmul, softmax in fp32,
weights back to the input dtype), the latter also with each KV head's query heads folded into the query axis
(one larger matmul per KV head instead of repeating K and V). Milliseconds, mean of ``--repeats`` after a warm-up.

    OMP_NUM_THREADS=2 python benchmarks/attention_blocks.py
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

H, KV, D = 9, 3, 64  # SmolLM2-135M: query heads, key/value heads, head dim
R = H // KV
BLOCKS = ((64, 300), (80, 230), (32, 200), (150, 150), (200, 800))  # (queries, keys); queries == keys: causal


def flash(q, k, v, mask):
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None, enable_gqa=True)


def eager(q, k, v, mask):
    k, v = k.repeat_interleave(R, 1), v.repeat_interleave(R, 1)
    s = torch.matmul(q, k.transpose(-1, -2)) * D ** -0.5
    s = s.masked_fill(~_full(mask, q.shape[2], k.shape[2]), float("-inf"))
    return torch.matmul(torch.softmax(s, -1, dtype=torch.float32).to(q.dtype), v)


def eager_folded(q, k, v, mask):
    n = q.shape[2]
    s = torch.matmul(q.reshape(1, KV, R * n, D), k.transpose(-1, -2)) * D ** -0.5
    s = s.masked_fill(~_full(mask, n, k.shape[2]).repeat(R, 1), float("-inf"))
    return torch.matmul(torch.softmax(s, -1, dtype=torch.float32).to(q.dtype), v).reshape(q.shape)


def _full(mask, n, m):
    return torch.ones(n, m, dtype=torch.bool).tril() if mask is None else mask


def time_block(fn, n: int, m: int, dtype: torch.dtype, repeats: int) -> float:
    q = torch.randn(1, H, n, D, dtype=dtype, requires_grad=True)
    k, v = (torch.randn(1, KV, m, D, dtype=dtype, requires_grad=True) for _ in range(2))
    mask = None
    if n != m:  # a completion: every prompt key, causal over itself
        mask = torch.ones(n, m, dtype=torch.bool)
        mask[:, m - n:] = torch.ones(n, n, dtype=torch.bool).tril()
    grad = torch.randn(1, H, n, D, dtype=dtype)
    for _ in range(5):
        fn(q, k, v, mask).backward(grad)
    start = time.perf_counter()
    for _ in range(repeats):
        fn(q, k, v, mask).backward(grad)
    return (time.perf_counter() - start) / repeats * 1e3


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=50)
    args = p.parse_args()
    torch.manual_seed(0)
    kernels = (("flash", flash), ("eager", eager), ("eager, folded", eager_folded))
    cols = [f"{name} {dt}" for name, _ in kernels for dt in ("fp32", "bf16")]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"avx512_bf16: {torch.cpu._is_avx512_bf16_supported()}")
    print("| block | " + " | ".join(cols) + " |\n|---|" + "---|" * len(cols))
    for n, m in BLOCKS:
        times = [time_block(fn, n, m, dt, args.repeats) for _, fn in kernels for dt in (torch.float32, torch.bfloat16)]
        label = f"{n} × {m}" + (" causal" if n == m else "")
        print(f"| {label} | " + " | ".join(f"{t:.2f}" for t in times) + " |", flush=True)


if __name__ == "__main__":
    main()
