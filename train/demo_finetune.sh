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
  if [ ! -f "$OUT/$task/test/metrics.json" ]; then  # FT_EPOCHS stopped it early: test the best checkpoint now
    csv=$(sed -n 's/^train_file: *//p' "$cfg")
    $BIN finetune-eval --checkpoint "$OUT/$task/checkpoint_best.safetensors" --csv "$csv" --split-column split \
      --split test --out "$OUT/$task/test"
  fi
done
step "test metrics (best checkpoint by validation, held-out test rows)"
for task in classify segment; do
  summary=$(sed -n 's/.*"\(auc\|f1\|acc\|dice\|miou\)": \([0-9.]*\).*/\1 \2/p' "$OUT/$task/test/metrics.json" | head -4 | tr '\n' ' ')
  echo "$task: $summary ($OUT/$task/test/metrics.json)"
done
step "done in $(( $(date +%s) - t0 ))s: $OUT/classify/checkpoint_best.safetensors, $OUT/segment/checkpoint_best.safetensors"
