#!/usr/bin/env bash
# make fuzz FUZZ_SECONDS=N [FUZZ_TARGETS='a b'] [FUZZ_JOBS=k]: runs each libFuzzer harness
# $FUZZ_BUILD/fuzz_<name> for N seconds. The working corpus $FUZZ_BUILD/corpus/<name>/ is
# seeded from tests/fuzz/corpus/<name>/ (committed seeds and regression inputs), the test
# fixtures and small real files from ../shared/data (copied at run time, never committed);
# it grows across runs. A finding (crash, sanitizer report, unnamed error) is saved under
# $FUZZ_BUILD/findings/<name>/ and makes this script exit 1. One summary line per harness
# (executions, coverage, features, corpus size) goes to stdout and $FUZZ_BUILD/summary.txt.
set -uo pipefail
cd "$(dirname "$0")/../.."
SECONDS_EACH=${1:?usage: run.sh SECONDS TARGET...}
shift
B=${FUZZ_BUILD:-build-fuzz}
JOBS=${FUZZ_JOBS:-1}
SHARED=${MEDSLIP_SHARED:-../shared}/data
F=tests/fixtures

seed() {  # seed NAME FILE... : copy the files that exist into the working corpus
  local name=$1
  shift
  for f in "$@"; do [ -f "$f" ] && cp -f "$f" "$B/corpus/$name/" 2>/dev/null; done
  return 0
}

prepare() {
  local name=$1 c=$B/corpus/$1
  mkdir -p "$c" "$B/findings/$name" "$B/logs"
  cp -f tests/fuzz/corpus/"$name"/* "$c"/ 2>/dev/null
  case $name in
    image)
      seed image $F/images/*.png $F/images/*.jpg $F/images/*.bmp
      seed image $F/strange/*.png $F/strange/*.jpg $F/strange/*.bmp
      seed image $(ls "$SHARED"/cxr14-sample/images/*.png 2>/dev/null | head -n 2) \
        $(ls "$SHARED"/pneumonia-kermany-224/images/* 2>/dev/null | head -n 3) \
        $(ls "$SHARED"/jsrt-seg-256/masks/*.png 2>/dev/null | head -n 2) ;;
    dicom) seed dicom $F/images/*.dcm $F/strange/*.dcm "$SHARED"/dicom/siim-acr-sample.dcm ;;
    safetensors) seed safetensors $(find $F -maxdepth 1 -name '*.safetensors' -size -64k) ;;
    pth) seed pth $F/weights_*.pth $F/weights_hf_bert.bin ;;
    npy) seed npy $F/data/*.npy ;;
    yaml_config) seed yaml_config train/configs/*.yaml ;;
    hf_config) seed hf_config $F/bert_tiny/config.json $F/bert_descriptions.json ;;
    csv)
      for f in cxr14-sample/labels.csv jsrt-seg-256/jsrt.csv pneumonia-kermany-224/labels.csv; do
        [ -f "$SHARED/$f" ] && head -n 12 "$SHARED/$f" > "$c/shared_$(dirname "$f").csv"
      done ;;
    tokenizer)
      if [ -f "$SHARED/reports/iu_xray_reports.csv" ]; then
        sed -n '2,9p' "$SHARED/reports/iu_xray_reports.csv" | split -l 1 - "$c/shared_report_"
      fi ;;
  esac
  return 0
}

run_one() {
  local name=$1 bin=$B/fuzz_$1 log=$B/logs/$1.log
  local dict=() maxlen=65536
  [ -f tests/fuzz/dict/$name.dict ] && dict=(-dict=tests/fuzz/dict/$name.dict)
  case $name in yaml_config | medslip_json | hf_config | csv | tokenizer) maxlen=8192 ;; esac
  prepare "$name"
  # libFuzzer also saves slow-unit-* inputs (over 10 s, -report_slow_units): reported, not a
  # finding by themselves (a loaded machine makes them); -timeout=20 is the limit that fails.
  local before
  before=$(ls "$B/findings/$name" | grep -vc '^slow-unit-')
  "$bin" "$B/corpus/$name" "${dict[@]}" -max_total_time="$SECONDS_EACH" -max_len=$maxlen -timeout=20 \
    -rss_limit_mb=3072 -malloc_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$B/findings/$name/" \
    >"$log" 2>&1
  local rc=$?
  local execs cov ft corp
  execs=$(grep -oE 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -oE '[0-9]+$' | tail -n1)
  cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -n1 | grep -oE '[0-9]+')
  ft=$(grep -oE 'ft: [0-9]+' "$log" | tail -n1 | grep -oE '[0-9]+')
  corp=$(ls "$B/corpus/$name" | wc -l)
  local found=$(($(ls "$B/findings/$name" | grep -vc '^slow-unit-') - before))
  local slow
  slow=$(grep -c 'Test unit written to .*slow-unit-' "$log")
  local verdict=ok
  [ "$slow" -gt 0 ] && verdict="ok ($slow slow input(s) saved in $B/findings/$name/: look at them)"
  if [ $rc -ne 0 ] || [ $found -gt 0 ]; then verdict="FINDING (rc $rc, see $log and $B/findings/$name/)"; fi
  printf '%-13s %4ss  execs %9s  cov %5s  ft %6s  corpus %5s  %s\n' "$name" "$SECONDS_EACH" "${execs:-?}" \
    "${cov:-?}" "${ft:-?}" "$corp" "$verdict" | tee -a "$B/summary.txt"
  [ "${verdict:0:2}" = ok ]
}

export -f run_one prepare seed
export B SHARED F SECONDS_EACH
fail=0
if [ "$JOBS" -gt 1 ]; then
  printf '%s\n' "$@" | xargs -P "$JOBS" -I{} bash -c 'run_one {}' || fail=1
else
  for t in "$@"; do run_one "$t" || fail=1; done
fi
[ $fail = 0 ] && echo "fuzz: no finding in $# harnesses x ${SECONDS_EACH}s" || echo "fuzz: FINDINGS (see above)"
exit $fail
