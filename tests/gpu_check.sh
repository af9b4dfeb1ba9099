#!/usr/bin/env bash
# The GPU check of issue 7, for a machine with an NVIDIA GPU (written for the lent H200; one
# run, well inside 10 minutes). From the repository root:
#
#   tests/gpu_check.sh            build with `make CUDA=1 -j16`, then run every check below
#   tests/gpu_check.sh --bundle   (on a build machine WITHOUT a GPU) build build-cuda/ and pack
#                                 the two binaries and the shared libraries they need that a
#                                 bare CUDA image lacks (DCMTK, ICU, yaml-cpp, fmt, OpenBLAS,
#                                 cudart) into build-cuda/bundle/medslip-cuda.tar.xz
#
# When the GPU machine lacks the Debian build dependencies (make check-deps would fail there:
# it cannot reach a package registry), the check uses that bundle instead of building: carry
# build-cuda/bundle with the run. cuBLAS is taken from the GPU machine (its CUDA toolkit or
# the nvidia-cublas Python wheel). docs/cuda.md says how to run it through the device tool.
#
# Checks, each a row of the final table:
#   1. build (or bundle)      make CUDA=1 compiles and links
#   2. kernel tests           build-cuda/medslip_tests -tc='cuda*': every CUDA kernel vs its CPU
#                             twin, ops end to end, two GPU runs bitwise equal, the allocator
#   3. compute-sanitizer      memcheck and racecheck on the kernel tests (exact-size allocations,
#                             MEDSLIP_CUDA_NO_CACHE=1, so an overrun past a tensor is caught)
#   4. step parity            medslip verify --export (the parity fixture), then medslip step
#                             --device cpu and --device cuda; losses, outputs and every gradient
#                             within the ARCHITECTURE tolerances (1e-4 forward, 1e-3 heads and
#                             decoders, 1e-2 ResNet trunk); once with dropout 0, once with 0.1
#                             (same Philox masks on both devices)
#   5. GPU determinism        medslip pretrain on a small synthetic set, twice, one seed, on
#                             cuda: every step's losses equal as printed (17 digits)
#   6. CPU vs GPU pretrain    the first step's loss of a CPU run against the GPU's (information)
#   7. data-parallel          (needs Open MPI: make CUDA=1 MPI=1) NCCL with world size 1 through
#                             the whole path (mpirun -np 1, accum_steps 2, --dist-backend nccl) =
#                             one process with accum_steps 2, every loss bit for bit; and two
#                             processes on the one GPU through the MPI host path (mpirun -np 2
#                             --dist-backend mpi) = one process with accum_steps 2. Two NCCL ranks
#                             cannot share one GPU (docs/cuda.md says what a multi-GPU machine must
#                             still confirm).
#
# Environment: OUT (results folder; default build-cuda/gpu_check), JOBS (make -j, default 16).
# Exit status: 0 when every check passed.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
JOBS=${JOBS:-16}
RES=${OUT:-$ROOT/build-cuda/gpu_check}
mkdir -p "$RES"
WORK=$(mktemp -d /tmp/medslip_gpu_check.XXXXXX)
export WORK
# One safetensors reader for the comparisons below (float64 arrays by name).
cat > "$WORK/st.py" <<'PY'
import json, struct
import numpy as np

def load(path):
    b = open(path, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    out = {}
    for k, v in json.loads(b[8:8 + n]).items():
        if k == "__metadata__":
            continue
        dt = {"F32": np.float32, "F64": np.float64, "I64": np.int64}[v["dtype"]]
        s, e = v["data_offsets"]
        out[k] = np.frombuffer(b[8 + n + s:8 + n + e], dtype=dt).astype(np.float64).reshape(v["shape"])
    return out
PY
T0=$(date +%s)
ROWS=()
FAILED=0
row() {  # row NAME STATUS DETAIL
  ROWS+=("$(printf '%-22s %-5s %s' "$1" "$2" "$3")")
  [ "$2" = "FAIL" ] && FAILED=1
  echo "=== [$(( $(date +%s) - T0 ))s] $1: $2 $3"
}
DEP_HEADERS="/usr/include/doctest/doctest.h /usr/include/fmt/core.h /usr/include/yaml-cpp/yaml.h
  /usr/include/CLI/CLI.hpp /usr/include/dcmtk/dcmdata/dctk.h /usr/include/unicode/uchar.h /usr/include/stb/stb_image.h"

# ---- --bundle: pack prebuilt binaries for a GPU machine without the build dependencies ----
if [ "${1:-}" = "--bundle" ]; then
  make CUDA=1 -j"${JOBS}" build-cuda/medslip build-cuda/medslip_tests || exit 1
  B=build-cuda/bundle
  rm -rf "$B" "$WORK/pack"
  mkdir -p "$B" "$WORK/pack/bin" "$WORK/pack/lib" "$WORK/pack/lib-fallback"
  cp build-cuda/medslip build-cuda/medslip_tests "$WORK/pack/bin/"
  # Everything the binaries load except the C library family and the driver/cuBLAS (taken
  # from the GPU machine). libstdc++/libgomp/libgcc_s go to lib-fallback, used only if missing.
  ldd build-cuda/medslip build-cuda/medslip_tests | awk '/=> \//{print $1, $3}' | sort -u |
    while read -r name path; do
      case "$name" in
        libc.so*|libm.so*|libdl.so*|libpthread.so*|librt.so*|ld-linux*|libcuda.so*|libcublas*) ;;
        libstdc++.so*|libgomp.so*|libgcc_s.so*) cp -L "$path" "$WORK/pack/lib-fallback/$name" ;;
        *) cp -L "$path" "$WORK/pack/lib/$name" ;;
      esac
    done
  git rev-parse HEAD > "$WORK/pack/COMMIT" 2>/dev/null || true
  tar -C "$WORK/pack" -cJf "$B/medslip-cuda.tar.xz" .
  du -h "$B/medslip-cuda.tar.xz"
  echo "carry build-cuda/bundle with the device run; the check unpacks it when it cannot build"
  rm -rf "$WORK"
  exit 0
fi

# ---- 1. build, or unpack the bundle ----------------------------------------------------------
MISSING=""
for h in $DEP_HEADERS; do [ -f "$h" ] || MISSING="$MISSING $h"; done
BIN=build-cuda/medslip
TESTS=build-cuda/medslip_tests
if [ -z "$MISSING" ] && command -v nvcc >/dev/null; then
  if make CUDA=1 -j"${JOBS}" build-cuda/medslip build-cuda/medslip_tests > "$RES/build.log" 2>&1; then
    row "build" "ok" "make CUDA=1 -j${JOBS} ($(( $(date +%s) - T0 ))s), nvcc $(nvcc --version | sed -n 's/.*release \([0-9.]*\).*/\1/p')"
  else
    tail -30 "$RES/build.log"
    row "build" "FAIL" "make CUDA=1 failed: see build.log"
  fi
elif [ -f build-cuda/bundle/medslip-cuda.tar.xz ]; then
  mkdir -p "$WORK/bundle"
  tar -C "$WORK/bundle" -xJf build-cuda/bundle/medslip-cuda.tar.xz
  BIN=$WORK/bundle/bin/medslip
  TESTS=$WORK/bundle/bin/medslip_tests
  export LD_LIBRARY_PATH="$WORK/bundle/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  # cuBLAS 13 from this machine: its toolkit, else PyTorch's nvidia-cublas wheel.
  for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib \
           $(python3 -c 'import nvidia.cublas, os; print(os.path.join(list(nvidia.cublas.__path__)[0], "lib"))' 2>/dev/null); do
    if [ -e "$d/libcublas.so.13" ]; then export LD_LIBRARY_PATH="$LD_LIBRARY_PATH:$d"; break; fi
  done
  if ldd "$BIN" | grep -q "not found"; then export LD_LIBRARY_PATH="$LD_LIBRARY_PATH:$WORK/bundle/lib-fallback"; fi
  if ldd "$BIN" "$TESTS" | grep "not found"; then
    row "build" "FAIL" "bundle: libraries not found (above)"
  else
    row "build" "ok" "prebuilt bundle (commit $(cut -c1-10 "$WORK/bundle/COMMIT" 2>/dev/null)); missing here:$MISSING"
  fi
else
  row "build" "FAIL" "cannot build here (missing:$MISSING) and no build-cuda/bundle: run tests/gpu_check.sh --bundle first"
fi
if [ ! -x "$BIN" ] || [ ! -x "$TESTS" ]; then
  printf '%s\n' "${ROWS[@]}" | tee "$RES/gpu_check.txt"
  exit 1
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader > "$RES/device.txt" 2>&1 || true
echo "device: $(cat "$RES/device.txt")"

# ---- 2. kernel tests ---------------------------------------------------------------------------
if timeout 200 "$TESTS" -tc='cuda*' > "$RES/tests.log" 2>&1; then
  row "kernel tests" "ok" "$(grep -E '^\[doctest\] (test cases|assertions)' "$RES/tests.log" | tr -s ' ' | tr '\n' ' ')"
else
  grep -B2 -A6 -E "ERROR|FAILED|skipping" "$RES/tests.log" | head -60
  row "kernel tests" "FAIL" "$(grep -E '^\[doctest\] (test cases|assertions)' "$RES/tests.log" | tr -s ' ' | tr '\n' ' ') see tests.log"
fi
if grep -q "skipping" "$RES/tests.log"; then row "kernel tests" "FAIL" "tests skipped: $(grep -m1 skipping "$RES/tests.log")"; fi

# ---- 3. compute-sanitizer ------------------------------------------------------------------------
SAN=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null || true)
if [ -n "$SAN" ]; then
  : > "$RES/sanitizer.log"
  for tool in memcheck racecheck; do
    if MEDSLIP_CUDA_NO_CACHE=1 timeout 100 "$SAN" --tool "$tool" --error-exitcode 99 \
         "$TESTS" -tc='cuda: *kernels*,cuda: gemm*' >> "$RES/sanitizer.log" 2>&1; then
      row "sanitizer $tool" "ok" "$(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$RES/sanitizer.log" | tail -1)"
    else
      rc=$?
      grep -m20 -E "=========" "$RES/sanitizer.log" | tail -20
      if [ $rc = 124 ]; then
        row "sanitizer $tool" "n/a" "stopped after 100 s (timeout; see sanitizer.log)"
      elif grep -q -E "Device not supported|not supported on this" "$RES/sanitizer.log"; then
        row "sanitizer $tool" "n/a" "compute-sanitizer does not support this machine (see sanitizer.log)"
      else
        row "sanitizer $tool" "FAIL" "exit $rc: see sanitizer.log"
      fi
    fi
  done
else
  row "sanitizer" "n/a" "compute-sanitizer not installed"
fi

# ---- 4. step parity: CPU vs GPU on the parity fixture -------------------------------------------
compare_steps() {  # compare_steps CPU.safetensors GPU.safetensors LABEL
  python3 - "$1" "$2" "$3" <<'PY'
import os, sys
import numpy as np
sys.path.insert(0, os.environ["WORK"])
from st import load

cpu, gpu, label = load(sys.argv[1]), load(sys.argv[2]), sys.argv[3]
TRUNK = ("res_features.", "mask_generator.", "res_l1_", "res_l2_")
rows, fails = [], 0
for k in sorted(cpu):
    if k not in gpu:
        print(f"{label}: {k} missing from the GPU output"); fails += 1; continue
    c, g = cpu[k], gpu[k]
    if k.startswith("grad."):
        name = k[5:]
        tol, kind = (1e-2, "trunk grad") if name.startswith(TRUNK) else (1e-3, "grad")
    else:
        tol, kind = 1e-4, "forward"
    nc = np.linalg.norm(c)
    if ".in_proj_bias" in k:  # K third: an exactly-zero true gradient, rounding noise in both
        err = abs(np.linalg.norm(g) - nc) / max(nc, 1e-30); kind += " (norm)"
    else:
        err = np.linalg.norm(g - c) / nc if nc > 0 else np.linalg.norm(g - c)
    ok = np.isfinite(err) and err <= tol
    fails += 0 if ok else 1
    rows.append((err / tol if np.isfinite(err) else np.inf, k, kind, err, tol, ok))
rows.sort(reverse=True)
print(f"{label}: {len(rows)} tensors; the 12 nearest their tolerance (rel-L2, % of tolerance used):")
for used, k, kind, err, tol, ok in rows[:12]:
    print(f"  {k:<64} {kind:<18} {err:10.3g} {100 * used:6.1f}% of {tol:g} {'ok' if ok else 'FAIL'}")
by = {}
for used, k, kind, err, tol, ok in rows:
    by[kind.split(" (")[0]] = max(by.get(kind.split(" (")[0], 0), used)
losses = {k: (cpu[k].item(), gpu[k].item()) for k in cpu if k.startswith("loss")}
print(f"{label}: loss cpu {losses['loss'][0]:.7f} gpu {losses['loss'][1]:.7f}")
summary = ", ".join(f"{kind} worst {100 * u:.1f}%" for kind, u in sorted(by.items()))
print(f"SUMMARY {label}: {len(rows)} tensors, {fails} outside tolerance; {summary}")
sys.exit(1 if fails else 0)
PY
}
FIX=$WORK/reference
if "$BIN" verify --export "$FIX" > "$RES/step.log" 2>&1; then
  for drop in 0 0.1; do
    ok=1
    for dev in cpu cuda; do
      "$BIN" step --config "$FIX/config.yaml" --weights "$FIX/weights.safetensors" --books "$FIX/books.safetensors" \
        --batch "$FIX/batch.safetensors" --dropout "$drop" --seed 3 --device "$dev" \
        --out "$WORK/step_${dev}_${drop}.safetensors" >> "$RES/step.log" 2>&1 || ok=0
    done
    if [ $ok = 1 ] && compare_steps "$WORK/step_cpu_${drop}.safetensors" "$WORK/step_cuda_${drop}.safetensors" \
         "dropout $drop" >> "$RES/step.log" 2>&1; then
      row "step parity p=$drop" "ok" "$(grep "SUMMARY dropout $drop" "$RES/step.log" | cut -d: -f2-)"
    else
      grep -E "FAIL|Error|error|what" "$RES/step.log" | head -20
      row "step parity p=$drop" "FAIL" "$(grep "SUMMARY dropout $drop" "$RES/step.log" | cut -d: -f2-) see step.log"
    fi
  done
else
  tail -5 "$RES/step.log"
  row "step parity" "FAIL" "medslip verify --export failed (step.log)"
fi

# ---- 5./6. pretraining: GPU twice with one seed (bitwise), CPU once (first step) ----------------
D=$WORK/pretrain
mkdir -p "$D"
cat > "$D/config.yaml" <<EOF
res_base_model: resnet18
image_res: 64
N: 2
H: 4
d_model: 256
dropout: 0.1
batch_size: 8
train_file: $D/data/train.json
valid_file: $D/data/valid.json
label_file: $D/data/landmark_observation_adj_mtx.npy
books: $FIX/books.safetensors
seed: 42
num_workers: 2
log_every: 1
max_steps_per_epoch: 8
optimizer: {opt: adamW, lr: 1e-4, weight_decay: 0.02}
schedular: {sched: cosine, epochs: 2, min_lr: 1e-5, warmup_lr: 1e-5, warmup_epochs: 1, decay_rate: 1, warmup_iters_per_step: 4}
EOF
losses_of() { grep '"type":"step"' "$1/metrics.jsonl" | python3 -c '
import json, sys
for l in sys.stdin:
    j = json.loads(l)
    print(j["step"], *(repr(j[k]) for k in ("loss", "loss_ce_pathology", "loss_cl_pathology", "loss_ce_anatomy", "loss_cl_anatomy", "loss_ap")))'; }
if "$BIN" synth --out "$D/data" --n 120 --size 64 --seed 1 > "$RES/pretrain.log" 2>&1 &&
   "$BIN" pretrain --config "$D/config.yaml" --device cuda --out "$D/gpu1" >> "$RES/pretrain.log" 2>&1 &&
   "$BIN" pretrain --config "$D/config.yaml" --device cuda --out "$D/gpu2" >> "$RES/pretrain.log" 2>&1; then
  losses_of "$D/gpu1" > "$D/gpu1.txt"
  losses_of "$D/gpu2" > "$D/gpu2.txt"
  n=$(wc -l < "$D/gpu1.txt")
  { echo "--- GPU run 1 losses"; cat "$D/gpu1.txt"; echo "--- GPU run 2 losses"; cat "$D/gpu2.txt"; } >> "$RES/pretrain.log"
  if [ "$n" -gt 0 ] && cmp -s "$D/gpu1.txt" "$D/gpu2.txt"; then
    row "GPU determinism" "ok" "pretrain twice, seed 42: $n steps, every loss identical (last: $(tail -1 "$D/gpu1.txt" | cut -d' ' -f2))"
  else
    diff "$D/gpu1.txt" "$D/gpu2.txt" | head -10
    row "GPU determinism" "FAIL" "$n steps; the two runs differ (pretrain.log)"
  fi
  if "$BIN" pretrain --config "$D/config.yaml" --device cpu --out "$D/cpu" --max-steps 1 >> "$RES/pretrain.log" 2>&1; then
    c=$(losses_of "$D/cpu" | head -1 | cut -d' ' -f2)
    g=$(head -1 "$D/gpu1.txt" | cut -d' ' -f2)
    rel=$(python3 -c "print(f'{abs($g - $c) / abs($c):.2e}')")
    st=$(python3 -c "print('ok' if abs($g - $c) <= 1e-4 * abs($c) else 'FAIL')")
    row "CPU vs GPU pretrain" "$st" "first-step loss cpu $c gpu $g (rel $rel, tol 1e-4)"
  else
    row "CPU vs GPU pretrain" "FAIL" "CPU run failed (pretrain.log)"
  fi
else
  tail -8 "$RES/pretrain.log"
  row "GPU determinism" "FAIL" "synth or pretrain failed (pretrain.log)"
fi

# ---- 7. every job on cuda: books, zeroshot, ground, predict against the same job on the CPU ------
CK=$D/gpu1/checkpoint_last.safetensors
if [ -f "$CK" ]; then
  ok=1
  : > "$RES/jobs.log"
  PIMG=$(ls "$D"/data/images/*.png | head -3)
  for dev in cpu cuda; do
    "$BIN" books --encoder tests/fixtures/bert_tiny --pathology-json "$D/data/observations.json" --max-length 64 \
      --device $dev --out "$WORK/books_$dev.safetensors" >> "$RES/jobs.log" 2>&1 || ok=0
    "$BIN" zeroshot --checkpoint "$CK" --books "$FIX/books.safetensors" --csv "$D/data/cxr14_test.csv" \
      --dataset synthetic --device $dev --out "$WORK/zs_$dev" --quiet >> "$RES/jobs.log" 2>&1 || ok=0
    "$BIN" ground --checkpoint "$CK" --books "$FIX/books.safetensors" --csv "$D/data/rsna_test.csv" \
      --dataset synthetic --device $dev --out "$WORK/gr_$dev" --quiet >> "$RES/jobs.log" 2>&1 || ok=0
    "$BIN" predict --checkpoint "$CK" --books "$FIX/books.safetensors" --device $dev $PIMG \
      > "$WORK/pred_$dev.txt" 2>> "$RES/jobs.log" || ok=0
  done
  if [ $ok = 1 ] && python3 - "$WORK" >> "$RES/jobs.log" 2>&1 <<'PY'
import csv, json, os, re, sys
import numpy as np
sys.path.insert(0, os.environ["WORK"])
from st import load
w = sys.argv[1]
fails, out = 0, []
a, g = load(f"{w}/books_cpu.safetensors"), load(f"{w}/books_cuda.safetensors")
for k in a:
    e = np.linalg.norm(a[k] - g[k]) / np.linalg.norm(a[k]); fails += e > 1e-5; out.append(f"books {k} rel-L2 {e:.2e}")
def scores(d):  # row,img_path,score:c,label:c,...
    rows = list(csv.reader(open(f"{w}/{d}/zeroshot_scores.csv")))
    return np.array([[float(x) for x in r[2::2]] for r in rows[1:]])
sc, sg = scores("zs_cpu"), scores("zs_cuda")
e = np.abs(sc - sg).max(); fails += e > 1e-4; out.append(f"zeroshot {sc.shape[0]} images x {sc.shape[1]} classes: max |p cpu - p gpu| {e:.2e}")
jc, jg = json.load(open(f"{w}/zs_cpu/zeroshot.json")), json.load(open(f"{w}/zs_cuda/zeroshot.json"))
out.append(f"zeroshot mean AUROC cpu {jc['metrics']['mean']['auc']:.6f} gpu {jg['metrics']['mean']['auc']:.6f}")
gc, gg = json.load(open(f"{w}/gr_cpu/ground.json")), json.load(open(f"{w}/gr_cuda/ground.json"))
for k in ("pointing", "iou", "dice"):
    c, g = gc["metrics"][k], gg["metrics"][k]
    e = abs(c - g); fails += e > 1e-4; out.append(f"ground {k} cpu {c:.6f} gpu {g:.6f}")
num = lambda p: [float(x) for x in re.findall(r"\b0\.\d+\b", open(p).read())]
pc, pg = num(f"{w}/pred_cpu.txt"), num(f"{w}/pred_cuda.txt")
e = max(abs(x - y) for x, y in zip(pc, pg)) if len(pc) == len(pg) and pc else float("inf")
fails += e > 1e-3; out.append(f"predict {len(pc)} printed numbers: max |cpu - gpu| {e:.1e}")
print("\n".join(out))
print(f"SUMMARY jobs: {fails} outside tolerance; " + "; ".join(o for o in out if not o.startswith("ground iou")))
sys.exit(1 if fails else 0)
PY
  then
    row "jobs on cuda" "ok" "books/zeroshot/ground/predict, GPU vs CPU: $(grep SUMMARY "$RES/jobs.log" | cut -d';' -f2- | cut -c1-400)"
  else
    tail -12 "$RES/jobs.log"
    row "jobs on cuda" "FAIL" "see jobs.log"
  fi
  # --tf32 (information): the same step with TF32 tensor cores against float32 products
  if "$BIN" step --config "$FIX/config.yaml" --weights "$FIX/weights.safetensors" --books "$FIX/books.safetensors" \
       --batch "$FIX/batch.safetensors" --dropout 0 --device cuda --tf32 --out "$WORK/step_tf32.safetensors" \
       >> "$RES/step.log" 2>&1 && [ -f "$WORK/step_cuda_0.safetensors" ]; then
    t=$(python3 - "$WORK/step_cuda_0.safetensors" "$WORK/step_tf32.safetensors" <<'PY'
import os, sys
import numpy as np
sys.path.insert(0, os.environ["WORK"])
from st import load
a, b = load(sys.argv[1]), load(sys.argv[2])
g = [k for k in a if k.startswith("grad.")]
ga, gb = np.concatenate([a[k].ravel() for k in g]), np.concatenate([b[k].ravel() for k in g])
la, lb = float(a["loss"]), float(b["loss"])
print(f"loss f32 {la:.7f} tf32 {lb:.7f} (rel {abs(lb - la) / abs(la):.1e}); "
      f"all {len(g)} gradients together rel-L2 {np.linalg.norm(ga - gb) / np.linalg.norm(ga):.1e}")
PY
)
    row "--tf32 (info)" "info" "$t"
  else
    row "--tf32 (info)" "FAIL" "step --tf32 failed (step.log)"
  fi
fi

# ---- 7. data-parallel: NCCL at world size 1, two ranks on one GPU through MPI ------------------
if [ -f "$D/config.yaml" ] && [ -d "$D/data" ] && command -v mpirun >/dev/null && command -v mpicxx >/dev/null &&
   [ "$BIN" = build-cuda/medslip ]; then
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
  MPIRUN="mpirun --oversubscribe --bind-to none"
  if make CUDA=1 MPI=1 -j"$JOBS" build-cuda-mpi/medslip > "$RES/dist.log" 2>&1; then
    MB=build-cuda-mpi/medslip
    sed 's/^max_steps_per_epoch: 8/max_steps_per_epoch: 3/; s/^seed: 42/seed: 42\naccum_steps: 2/' "$D/config.yaml" > "$D/accum2.yaml"
    sed 's/^max_steps_per_epoch: 8/max_steps_per_epoch: 3/' "$D/config.yaml" > "$D/dp.yaml"
    same_losses() { losses_of "$1" > "$1.txt"; losses_of "$2" > "$2.txt"; [ -s "$1.txt" ] && cmp -s "$1.txt" "$2.txt"; }
    if "$MB" pretrain --config "$D/accum2.yaml" --device cuda --out "$D/acc" >> "$RES/dist.log" 2>&1 &&
       $MPIRUN -np 1 "$MB" pretrain --config "$D/accum2.yaml" --device cuda --dist-backend nccl --out "$D/nccl1" >> "$RES/dist.log" 2>&1 &&
       grep -q '"allreduce":"nccl"' "$D/nccl1/reproducibility.json"; then
      if same_losses "$D/acc" "$D/nccl1"; then
        row "NCCL world 1" "ok" "mpirun -np 1 --dist-backend nccl, accum_steps 2: $(wc -l < "$D/acc.txt") steps, losses = one process bit for bit"
      else
        row "NCCL world 1" "FAIL" "losses differ from one process (dist.log, $D)"
      fi
    else
      tail -8 "$RES/dist.log"
      row "NCCL world 1" "FAIL" "run failed or did not use NCCL (dist.log)"
    fi
    if $MPIRUN -np 2 "$MB" pretrain --config "$D/dp.yaml" --device cuda --dist-backend mpi --out "$D/mpi2" >> "$RES/dist.log" 2>&1; then
      if same_losses "$D/acc" "$D/mpi2"; then
        row "2 ranks, 1 GPU (MPI)" "ok" "mpirun -np 2 --dist-backend mpi = accum_steps 2 bit for bit ($(wc -l < "$D/mpi2.txt") steps)"
      else
        row "2 ranks, 1 GPU (MPI)" "FAIL" "losses differ from accum_steps 2 (dist.log)"
      fi
    else
      tail -8 "$RES/dist.log"
      row "2 ranks, 1 GPU (MPI)" "FAIL" "mpirun -np 2 failed (dist.log)"
    fi
  else
    tail -8 "$RES/dist.log"
    row "data-parallel" "FAIL" "make CUDA=1 MPI=1 failed (dist.log)"
  fi
else
  row "data-parallel" "n/a" "needs Open MPI (mpirun, mpicxx) and a local build (not the bundle)"
fi

# ---- table ------------------------------------------------------------------------------------
{
  echo
  echo "medslip GPU check — $(cat "$RES/device.txt" 2>/dev/null) — commit $(git rev-parse --short HEAD 2>/dev/null || echo '?') — $(( $(date +%s) - T0 ))s"
  printf '%-22s %-5s %s\n' "check" "" "result"
  printf '%s\n' "${ROWS[@]}"
  [ $FAILED = 0 ] && echo "ALL CHECKS PASSED" || echo "SOME CHECKS FAILED"
} | tee "$RES/gpu_check.txt"
rm -rf "$WORK"
exit $FAILED
