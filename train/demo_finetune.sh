#!/usr/bin/env bash
# make demo-finetune: fine-tuning on real radiographs (../shared/data), both tasks of spec E.5/E.6:
#   classification: pneumonia vs normal, pneumonia-kermany-224 (train/configs/finetune_classify_demo.yaml)
#   segmentation:   both lungs, jsrt-seg-256 (train/configs/finetune_segment_demo.yaml)
# Each run keeps a seeded validation split out of its training rows (the best checkpoint is
# chosen there), tests once on the held-out test rows, and leaves
#   demo/finetune/classify/checkpoint_best.safetensors, demo/finetune/segment/checkpoint_best.safetensors
# plus test/metrics.json, test/predictions.csv and (segmentation) test/masks + test/overlays.
# INIT=checkpoint starts both from a MeDSLIP checkpoint (default: from scratch);
# FT_EPOCHS=N shortens both runs; SHARED=dir points elsewhere than ../shared.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-build/medslip}
OUT=${FT_DIR:-demo/finetune}
SHARED=${SHARED:-../shared}
t0=$(date +%s)
step() { echo; echo "=== [$(( $(date +%s) - t0 ))s] $*"; }
if [ ! -d "$SHARED/data/pneumonia-kermany-224" ] || [ ! -d "$SHARED/data/jsrt-seg-256" ]; then
  echo "demo-finetune: needs $SHARED/data/pneumonia-kermany-224 and $SHARED/data/jsrt-seg-256 (set SHARED=...)" >&2
  exit 2
fi
extra=()
[ -n "${INIT:-}" ] && extra+=(--init "$INIT")
[ -n "${FT_EPOCHS:-}" ] && extra+=(--epochs "$FT_EPOCHS")
mkdir -p "$OUT"
for task in classify segment; do
  cfg=train/configs/finetune_${task}_demo.yaml
  [ "$SHARED" = ../shared ] || { sed "s#\.\./shared#$SHARED#g" "$cfg" > "$OUT/$task.yaml"; cfg="$OUT/$task.yaml"; }
  step "fine-tuning: $task ($cfg)"
  rm -rf "$OUT/$task"
  $BIN finetune --config "$cfg" --out "$OUT/$task" "${extra[@]}"
done
step "test metrics (best checkpoint by validation, held-out test rows)"
for task in classify segment; do
  python_free=$(sed -n 's/.*"\(auc\|dice\)": \([0-9.]*\).*/\1 \2/p' "$OUT/$task/test/metrics.json" | head -3 | tr '\n' ' ')
  echo "$task: $python_free  ($OUT/$task/test/metrics.json)"
done
step "done in $(( $(date +%s) - t0 ))s: $OUT/classify/checkpoint_best.safetensors, $OUT/segment/checkpoint_best.safetensors"
