"""GPU check: the prefix-shared flex route equals the padded path on CUDA (rewards and every gradient).

SmolLM2-135M in fp32 (TF32 off, so the comparison is of the algorithms, not of TF32 rounding) on the first
``--pairs`` HH helpful-base pairs, then once more in bf16 autocast (what training on a GPU runs), where the
tolerance is bf16's. Exits 1 when a tolerance is exceeded. Run by ``benchmarks/gpu_check_train.sh``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--pairs", type=int, default=8)
    p.add_argument("--output", default="")
    a = p.parse_args()
    from speed import hh_pairs

    from rewardkit.batching import Encoder
    from rewardkit.model import load_reward_model
    from rewardkit.sharing import group_rewards

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.manual_seed(0)
    model, tok = load_reward_model(a.model)
    model.to("cuda").train()
    with torch.no_grad():
        model.hf.score.weight.mul_(30)  # O(1) rewards, so the relative tolerance means something
    groups = hh_pairs(Encoder(tok, max_length=1024), a.pairs)

    def run(shared: bool, bf16: bool):
        model.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
            out = group_rewards(model, groups, tok.pad_token_id, shared=shared)
            r = torch.stack(list(out))
            loss = -torch.nn.functional.logsigmoid(r[:, 0] - r[:, 1]).mean() + 0.01 * (r ** 2).mean()
        loss.backward()
        grads = {n: q.grad.detach().float().clone() for n, q in model.named_parameters() if q.grad is not None}
        return out.path, getattr(out, "route", None), r.detach().float(), grads

    results, ok = {}, True
    for bf16, tol in ((False, 1e-3), (True, 5e-2)):
        p_path, _, r_ref, g_ref = run(False, bf16)
        s_path, route, r, g = run(True, bf16)
        reward_err = float(((r - r_ref).abs() / r_ref.abs().clamp(min=1)).max())
        grad_err = max(float((g[n] - g_ref[n]).abs().max() / g_ref[n].abs().max().clamp(min=1e-12)) for n in g_ref)
        name = "bf16 autocast" if bf16 else "fp32"
        results[name] = {"paths": [p_path, s_path], "route": route, "reward_rel_err": reward_err,
                         "grad_rel_err": grad_err, "tolerance": tol}
        print(f"{name}: padded vs shared ({route}): max reward rel. error {reward_err:.2e}, max gradient rel. "
              f"error {grad_err:.2e} (tolerance {tol})")
        ok &= s_path == "shared" and route == "flex" and reward_err <= tol and grad_err <= tol
    if a.output:
        Path(a.output).write_text(json.dumps(results, indent=2))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
