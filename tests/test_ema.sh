#!/usr/bin/env bash
# The weight average as a first-class result (issue 16): --ema warms its
# decay up (a 0.999 average of a short run follows the weights instead of
# staying near their initialization), its accuracy is in the final line and
# the summary, and `nndist eval --weights ema` reproduces it from the
# checkpoint; in async mode too (the parameter servers keep it).
# Usage: test_ema.sh NNDIST TMPDIR
set -uo pipefail
bin=$1 tmp=$2/ema
rm -rf "$tmp" && mkdir -p "$tmp" && cd "$tmp" || exit 1
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
passed=0 failed=0
ok() { echo "ok: $*"; passed=$((passed + 1)); }
bad() { echo "FAIL: $*"; failed=$((failed + 1)); }
num() { sed -n "s/.*\"$2\": \([-0-9.e]*\).*/\1/p" "$1" | head -1; }
"$bin" data synth --out d.h5 --rows 2000 --test-rows 500 --features 20 --classes 4 --separation 0.7 >/dev/null
# 2 epochs of 62 steps: without a warm-up, 0.999^124 = 0.88 of the average
# would still be the initial weights.
"$bin" train --data d.h5 --hidden 32 --batch 32 --epochs 2 --lr 0.05 --ema 0.999 --progress none --threads 1 \
  --checkpoint-dir ck --summary s.json >run.log 2>&1 || bad "training failed: $(grep nndist: run.log)"
raw=$(num s.json test_accuracy) avg=$(num s.json ema_test_accuracy)
echo "test accuracy $raw, weight average $avg"
awk -v r="$raw" -v a="$avg" 'BEGIN { exit !(a > 0.9 && a > r - 0.05) }' \
  && ok "the 0.999 average of a short run is close to the weights ($avg against $raw)" \
  || bad "the average lags: $avg against $raw"
grep -q "^final test accuracy .*; ema $avg\|; final test accuracy .*; ema $avg" run.log \
  && ok "the final line gives the average" || bad "final line: $(grep -i 'final test' run.log)"
ck=$(ls ck/ckpt-step*.h5 | sort | tail -1)
e_avg=$("$bin" eval --checkpoint "$ck" --data d.h5 --weights ema --json | sed -n 's/.*"accuracy": \([0-9.]*\).*/\1/p')
e_raw=$("$bin" eval --checkpoint "$ck" --data d.h5 --json | sed -n 's/.*"accuracy": \([0-9.]*\).*/\1/p')
awk -v e="$e_avg" -v s="$avg" 'BEGIN { exit !(e - s < 1e-4 && s - e < 1e-4) }' \
  && ok "eval --weights ema reproduces it ($e_avg)" || bad "eval --weights ema: $e_avg, summary $avg"
awk -v e="$e_raw" -v s="$raw" 'BEGIN { exit !(e - s < 1e-4 && s - e < 1e-4) }' \
  && ok "eval (raw weights) reproduces the test accuracy ($e_raw)" || bad "eval raw: $e_raw, summary $raw"
# Async (1 parameter server + 1 worker): the server averages its slice;
# reported alike, and saved with the model for eval --weights ema.
mpiexec -n 2 "$bin" train --mode async --data d.h5 --hidden 32 --batch 32 --epochs 2 --lr 0.05 --ema 0.999 \
  --progress none --threads 1 --checkpoint-dir cka --summary sa.json >async.log 2>&1 \
  || bad "async training failed: $(grep nndist: async.log)"
a_raw=$(num sa.json test_accuracy) a_avg=$(num sa.json ema_test_accuracy)
echo "async: test accuracy $a_raw, weight average $a_avg"
grep -q "ema test acc" async.log && grep -q "; final test accuracy .*; ema $(printf %.4f "$a_avg")$" async.log \
  && awk -v r="$a_raw" -v a="$a_avg" 'BEGIN { exit !(a > 0.9 && a > r - 0.05 && a != r) }' \
  && ok "async: the servers' average is reported ($a_avg against $a_raw)" || bad "async: $(tail -2 async.log)"
e_avg=$(mpiexec -n 2 "$bin" eval --checkpoint cka/model.h5 --data d.h5 --weights ema --json \
  | sed -n 's/.*"accuracy": \([0-9.]*\).*/\1/p')
awk -v e="$e_avg" -v s="$a_avg" 'BEGIN { exit !(e != "" && e - s < 1e-6 && s - e < 1e-6) }' \
  && ok "async: eval --weights ema of the saved model reproduces it ($e_avg)" || bad "async eval: $e_avg, summary $a_avg"
# A checkpoint without an average, and a bad value, are refused in one line.
"$bin" train --data d.h5 --hidden 32 --batch 32 --epochs 1 --progress none --threads 1 --checkpoint-dir plain \
  >plain.log 2>&1
out=$("$bin" eval --checkpoint "$(ls plain/ckpt-step*.h5 | tail -1)" --data d.h5 --weights ema 2>&1)
[ $? -ne 0 ] && grep -q "^nndist: error: --weights ema: .* holds no /ema (the run had no --ema)$" <<< "$out" \
  && ok "--weights ema without an average: refused" || bad "no-ema checkpoint: $out"
out=$("$bin" eval --checkpoint "$ck" --data d.h5 --weights best 2>&1)
[ $? -eq 2 ] && grep -q "^nndist: error: --weights: 'best' is not one of raw, ema$" <<< "$out" \
  && ok "--weights best: refused" || bad "--weights best: $out"
echo "$passed passed, $failed failed"
[ $failed -eq 0 ]
