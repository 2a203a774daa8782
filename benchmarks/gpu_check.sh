#!/usr/bin/env bash
# The GPU check, as one script (≤ 10 min on one GPU). Run it through the device tool when a GPU is lent:
#   bash benchmarks/gpu_check.sh            (results land in $OUT, or ./gpu-results)
#   1. precision × route (issue 33): `rewardkit eval` of SmolLM2 on 300 HH pairs under --precision fp32 / bf16 /
#      auto × --route flex / segments / padded: accuracy, agreement of rewards with fp32-padded, wall time, and
#      which precision / route the scorer reports having used (a compile failure would show as the segments
#      fallback with its warning); then 10 training steps per precision on the flex route, and a resume on CUDA.
#   2. the serving benchmark on CUDA (issue 12), where dynamic batching is expected to matter most.
# The device machine is bare and offline: it uses that machine's own python3 and CUDA torch, with this
# checkout on PYTHONPATH; packages it lacks (see the device tool's KINDS.md) travel as wheels (.whl, carried).
# Nothing here runs in the test suite. Never quote a GPU figure that this script did not print.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-gpu-results}"; mkdir -p "$OUT"
PY="${PYTHON:-python3}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
HH=../shared/data/hh-rlhf/helpful-base.jsonl.gz
"$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.__version__, torch.cuda.get_device_name(0), 'bf16:', torch.cuda.is_bf16_supported())"
for prec in fp32 bf16 auto; do
  for route in flex segments padded; do
    start=$SECONDS
    timeout 90 "$PY" -m rewardkit.cli eval --model smollm2-135m --data "$HH[:300]" --skip-bad-records --device cuda \
      --precision "$prec" --route "$route" --bootstrap-samples 0 --output "$OUT/eval-$prec-$route.json" \
      > "$OUT/eval-$prec-$route.log" 2>&1 || echo "eval $prec $route FAILED (see $OUT/eval-$prec-$route.log)"
    echo "eval $prec $route: $((SECONDS - start)) s; $(grep -h 'precision:' "$OUT/eval-$prec-$route.log" | head -1)"
  done
done | tee "$OUT/precision-route.txt"
"$PY" - "$OUT" <<'PY' | tee -a "$OUT/precision-route.txt"
import json, sys, pathlib, numpy as np
out = pathlib.Path(sys.argv[1])
def rewards(p):
    return np.concatenate([np.asarray(json.loads(l)["rewards"]) for l in open(p.with_suffix(".rewards.jsonl"))])
ref = rewards(out / "eval-fp32-padded.json")
for f in sorted(out.glob("eval-*.json")):
    r = json.loads(f.read_text()); s = r["scorer"]; mine = rewards(f)
    print(f"{f.stem}: accuracy {r['accuracy']:.4f}, path {s.get('scoring_path')}, route {s.get('route')}, "
          f"precision {s.get('precision', {}).get('compute')}/{s.get('precision', {}).get('weights')}, "
          f"max |r - r_fp32_padded| {np.abs(mine - ref).max():.2e}")
PY
for prec in fp32 bf16; do
  timeout 120 "$PY" -m rewardkit.cli train --train-data "$HH[:160]" --skip-bad-records --precision "$prec" --route flex \
    --max-steps 10 --save-every 5 --no-eval-before --output-dir "$OUT" --run-name "train-$prec" --overwrite 2>&1 \
    | grep -E "precision:|run:|steps|loss" | tail -4 | sed "s/^/train $prec: /" | tee -a "$OUT/precision-route.txt"
done
rm -rf "$OUT"/train-bf16/checkpoints/step-000010
timeout 90 "$PY" -m rewardkit.cli train --train-data "$HH[:160]" --skip-bad-records --precision bf16 --route flex \
  --max-steps 10 --save-every 5 --no-eval-before --output-dir "$OUT" --run-name train-bf16 --resume auto 2>&1 \
  | grep -E "resumed|run:" | sed "s/^/resume bf16: /" | tee -a "$OUT/precision-route.txt"
find "$OUT" -name "*.safetensors" -delete; find "$OUT" -name "trainer_state.pt" -delete  # weights do not travel back
timeout 300 "$PY" benchmarks/serving.py --device cuda --threads 4 --repeats 3 --sweep 1,8,32,64 \
  --sweep-pairs 64 --clients 64 --requests 50 --output "$OUT/serving-gpu.json" 2>&1 | tee "$OUT/serving-gpu.md"
