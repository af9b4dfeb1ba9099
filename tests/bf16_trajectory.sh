#!/usr/bin/env bash
# The loss trajectory of --precision bf16 against FP32 over the first STEPS (200) pretraining
# steps of the demo recipe (train/configs/demo.yaml on the synthetic set), from the same seed:
# per step, the relative difference of the total loss, and the final losses. For scale, the same
# figures for FP32 through OpenBLAS instead of oneDNN (MEDSLIP_CPU_GEMM=openblas): two FP32 runs
# that differ only in the last bits of each product, i.e. how far float32 rounding alone moves
# the trajectory. docs/performance.md quotes its output. Losses do not depend on the thread count. Needs the demo's data and books (make demo once, or DEMO_DIR with them).
# Usage: tests/bf16_trajectory.sh [STEPS]   (env: BIN, DEMO_DIR=demo, OUT=build/bf16_trajectory)
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=${1:-200}
BIN=${BIN:-build/medslip}
DEMO=${DEMO_DIR:-demo}
OUT=${OUT:-build/bf16_trajectory}
for f in "$DEMO/data/train.json" "$DEMO/books_128.safetensors"; do
  [ -f "$f" ] || { echo "bf16_trajectory: $f is missing: run make demo first (or set DEMO_DIR)" >&2; exit 2; }
done
mkdir -p "$OUT"
sed -e "s|demo/data/|$DEMO/data/|g; s|demo/books_128|$DEMO/books_128|; s|^log_every:.*|log_every: 1|" \
  train/configs/demo.yaml > "$OUT/demo.yaml"
for run in fp32 bf16 fp32-openblas; do
  [ "${SKIP_EXISTING:-0}" = 1 ] && [ -s "$OUT/$run/metrics.jsonl" ] && continue
  rm -rf "$OUT/$run"
  gemm=dnnl; [ "$run" = fp32-openblas ] && gemm=openblas
  MEDSLIP_CPU_GEMM=$gemm /usr/bin/time -f "$run: %e s wall" "$BIN" pretrain --config "$OUT/demo.yaml" --out "$OUT/$run" \
    --max-steps "$STEPS" --precision "${run%%-*}" --quiet
done
/usr/bin/python3 - "$OUT" "$STEPS" <<'PY'
import json, sys, math
out, steps = sys.argv[1], int(sys.argv[2])
def losses(p):
    d = {}
    for line in open(f"{out}/{p}/metrics.jsonl"):
        r = json.loads(line)
        if r.get("type") == "step": d[r["step"]] = r
    return d
a = losses("fp32")
for name in ("bf16", "fp32-openblas"):
    b = losses(name)
    common = sorted(set(a) & set(b))
    assert len(common) >= steps, f"{name}: only {len(common)} common steps"
    rel = [abs(b[s]["loss"] - a[s]["loss"]) / abs(a[s]["loss"]) for s in common]
    terms = [k for k in a[common[0]] if k.startswith("loss_")]
    print(f"{name} against fp32 (oneDNN), {len(common)} steps")
    print(f"  total loss, |{name} - fp32| / fp32 per step: mean {sum(rel)/len(rel):.2e}, median {sorted(rel)[len(rel)//2]:.2e}, max {max(rel):.2e} (step {common[rel.index(max(rel))]})")
    for lo, hi in [(1, 10), (11, 50), (51, 100), (101, 200)]:
        r = [x for s, x in zip(common, rel) if lo <= s <= hi]
        if r: print(f"    steps {lo}-{hi}: mean {sum(r)/len(r):.2e}, max {max(r):.2e}")
    last = common[-1]
    avg = lambda d: sum(d[s]["loss"] for s in common[-20:]) / 20
    print(f"  final step {last}: fp32 {a[last]['loss']:.4f}, {name} {b[last]['loss']:.4f}; mean of the last 20 steps: fp32 {avg(a):.4f}, {name} {avg(b):.4f} ({(avg(b)-avg(a))/avg(a):+.2%})")
    print("  terms at the last step: " + ", ".join(f"{t[5:]} {a[last][t]:.4f} / {b[last][t]:.4f}" for t in terms))
PY
