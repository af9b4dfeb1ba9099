#!/usr/bin/env bash
# Recipe sweep for the demo (how README "make demo" found its recipe): several pretraining runs
# in parallel on one synthetic set per finding gain/scale, then zero-shot classification and
# grounding of each on the held-out images, one summary line per run.
#
#   tests/demo_sweep.sh                        the default runs below, on the GPU (make CUDA=1)
#   DEVICE=cpu RUNS="a 4 2 5e-4 0.8 0 2 12 16 96" tests/demo_sweep.sh
#
# RUNS: one run per line, "name gain scale lr crop_scale_min rand_augment_n N epochs batch res".
# Environment: BIN (default build/medslip), DEVICE (cuda), BOOKS (demo/books_128.safetensors,
# made by make demo), SWEEP_DIR (/tmp/medslip_sweep), N_IMAGES (2000), LIMIT (seconds per run,
# then Ctrl-C: the run saves a checkpoint and is evaluated as it stands; default none),
# THREADS (per run, default 2).
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-build/medslip}
DEVICE=${DEVICE:-cuda}
BOOKS=${BOOKS:-demo/books_128.safetensors}
D=${SWEEP_DIR:-/tmp/medslip_sweep}
THREADS=${THREADS:-2}
RUNS=${RUNS:-"g1 1 1 5e-4 0.8 0 4 8 16 96
g3 3 1 5e-4 0.8 0 4 8 16 96
g4s2 4 2 5e-4 0.8 0 4 9 16 96
g4s2n2 4 2 5e-4 0.8 0 2 12 16 96"}
[ -f "$BOOKS" ] || { echo "demo_sweep: no books file $BOOKS (run make demo once, or set BOOKS)"; exit 1; }
mkdir -p "$D"
T0=$(date +%s)
names=()
declare -A seen
while read -r n g s lr crop ra N ep bs res; do
  [ -z "$n" ] && continue
  data="$D/data_g${g}_s${s}"
  if [ -z "${seen[$data]:-}" ]; then
    seen[$data]=1
    "$BIN" synth --out "$data" --n "${N_IMAGES:-2000}" --size 128 --seed 1 --finding-gain "$g" --finding-scale "$s" \
      > "$data.log" 2>&1 || { echo "demo_sweep: synth failed ($data.log)"; exit 1; }
  fi
  names+=("$n")
  echo "$data" > "$D/$n.data"
  cat > "$D/$n.yaml" <<Y
res_base_model: resnet18
image_res: $res
d_model: 256
N: $N
H: 4
dropout: 0.1
batch_size: $bs
train_file: $data/train.json
valid_file: $data/valid.json
label_file: $data/landmark_observation_adj_mtx.npy
books: $BOOKS
seed: 42
num_workers: 2
log_every: 50
crop_scale_min: $crop
rand_augment_n: $ra
optimizer: {opt: adamW, lr: $lr, weight_decay: 0.02}
schedular: {sched: cosine, epochs: $ep, min_lr: 1e-5, warmup_lr: 1e-5, warmup_epochs: 1, decay_rate: 1, warmup_iters_per_step: 10}
Y
  limit=()
  [ -n "${LIMIT:-}" ] && limit=(timeout -s INT "$LIMIT")
  "${limit[@]}" "$BIN" pretrain --config "$D/$n.yaml" --device "$DEVICE" --threads "$THREADS" --out "$D/run_$n" \
    > "$D/pretrain_$n.log" 2>&1 &
done <<< "$RUNS"
wait
echo "pretraining done in $(( $(date +%s) - T0 ))s"
for n in "${names[@]}"; do
  data=$(cat "$D/$n.data")
  ck="$D/run_$n/checkpoint_last.safetensors"
  [ -f "$ck" ] || { echo "$n: no checkpoint ($D/pretrain_$n.log)"; continue; }
  "$BIN" zeroshot --checkpoint "$ck" --books "$BOOKS" --csv "$data/cxr14_test.csv" --dataset synthetic \
    --device "$DEVICE" --out "$D/run_$n" --quiet > "$D/zeroshot_$n.txt" 2>&1 &
  "$BIN" ground --checkpoint "$ck" --books "$BOOKS" --csv "$data/rsna_test.csv" --dataset synthetic \
    --device "$DEVICE" --out "$D/run_$n" --quiet > "$D/ground_$n.txt" 2>&1 &
done
wait
for n in "${names[@]}"; do
  python3 - "$D" "$n" <<'PY'
import json, sys
d, n = sys.argv[1], sys.argv[2]
line = f"{n}: {open(f'{d}/{n}.data').read().strip().rsplit('/', 1)[-1]}"
try:
    steps = [json.loads(l) for l in open(f"{d}/run_{n}/metrics.jsonl") if '"type":"step"' in l]
    line += f" | {len(steps)} steps, last loss {steps[-1]['loss']:.3f}"
except Exception as e:
    line += f" | no metrics ({e})"
try:
    m = json.load(open(f"{d}/run_{n}/zeroshot.json"))["metrics"]
    line += f" | mean AUROC {m['mean']['auc']:.4f} (" + " ".join(
        f"{c['name'].split()[-1][:5]} {c['auc']:.2f}" for c in m["classes"] if not c.get("skipped")) + ")"
except Exception as e:
    line += f" | no zeroshot ({e})"
try:
    g = json.load(open(f"{d}/run_{n}/ground.json"))["metrics"]
    line += f" | pointing {g['pointing']:.3f} (chance {g['chance']:.3f})"
except Exception as e:
    line += f" | no ground ({e})"
print(line)
PY
done | tee "$D/summary.txt"
echo "done in $(( $(date +%s) - T0 ))s; runs and logs in $D"
