#!/usr/bin/env bash
# The learning-rate range test (issue 16), on a tiny synthetic set: the CSV
# has one row a step (fewer only when the run diverged, which it says), the
# rates grow geometrically from --lr-min to --lr-max, the suggestion lies
# in that range, the PNG has the documented size; 2 ranks run it, and in
# --deterministic mode give 1 rank's curve; bad input gets one line.
# Usage: test_lrfind.sh NNDIST TMPDIR MPIEXEC NPFLAG
set -uo pipefail
bin=$1 tmp=$2/lrfind mpiexec=$3 npflag=$4
rm -rf "$tmp" && mkdir -p "$tmp" && cd "$tmp" || exit 1
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
passed=0 failed=0
ok() { echo "ok: $*"; passed=$((passed + 1)); }
bad() { echo "FAIL: $*"; failed=$((failed + 1)); }
rows() { echo $(($(wc -l < "$1") - 1)); }
# The PNG's IHDR width and height (bytes 16..23, big-endian).
png_size() { od -An -tu1 -j16 -N8 "$1" | awk '{ printf "%dx%d", $1*16777216+$2*65536+$3*256+$4, $5*16777216+$6*65536+$7*256+$8 }'; }

"$bin" data synth --out d.h5 --rows 2000 --test-rows 200 --features 20 --classes 4 --separation 0.7 >/dev/null
common=(--data d.h5 --hidden 32 --batch 32 --threads 1)

# A ramp that stays below divergence: every step is a row.
"$bin" lr-find "${common[@]}" --steps 40 --lr-min 1e-4 --lr-max 0.1 --out a >a.log 2>&1 \
  || bad "lr-find failed: $(grep nndist: a.log)"
[ "$(head -1 a.csv)" = "step,lr,loss,smoothed_loss" ] && ok "CSV header" || bad "CSV header: $(head -1 a.csv)"
if grep -q "diverged" a.log; then
  n=$(sed -n 's/^lr-find: stopped at step \([0-9]*\) of 40 .*/\1/p' a.log)
  [ "$(rows a.csv)" = "$n" ] && ok "stopped on divergence at step $n, and the CSV has $n rows" \
    || bad "stopped at step '$n', but the CSV has $(rows a.csv) rows"
else
  [ "$(rows a.csv)" = 40 ] && ok "40 steps, 40 rows" || bad "40 steps, $(rows a.csv) rows"
fi
# Geometric: each rate is the last times (max/min)^(1/(steps-1)), from lr-min (to lr-max).
awk -F, -v lo=1e-4 -v hi=0.1 -v n=40 'NR == 1 { next }
  { r[NR - 2] = $2 }
  END { q = exp(log(hi / lo) / (n - 1)); e = 0
        if (r[0] / lo - 1 > 1e-6 || lo / r[0] - 1 > 1e-6) e = 1
        for (i = 1; i in r; ++i) { d = r[i] / r[i - 1] / q - 1; if (d > 1e-5 || d < -1e-5) e = 1 }
        if ((n - 1) in r && (r[n - 1] / hi - 1 > 1e-6 || hi / r[n - 1] - 1 > 1e-6)) e = 1
        exit e }' a.csv && ok "rates grow geometrically from --lr-min to --lr-max" || bad "rates: $(cut -d, -f2 a.csv | head -4 | tr '\n' ' ')"
# The loss fell along the ramp (the test's point), and the suggestion lies in the ramp.
awk -F, 'NR == 2 { first = $4 } NR > 2 { last = $4; if ($4 < m || NR == 3) m = $4 } END { exit !(m < first) }' a.csv \
  && ok "the smoothed loss falls along the ramp" || bad "the smoothed loss never fell"
s=$(sed -n 's/^lr-find: suggested --lr \([0-9.e+-]*\) .*/\1/p' a.log)
awk -v s="$s" 'BEGIN { exit !(s != "" && s + 0 >= 1e-4 && s + 0 <= 0.1) }' \
  && ok "suggested --lr $s, within [1e-4, 0.1], with its rule: $(grep -o '(the rate at[^)]*)' a.log)" \
  || bad "suggestion: $(grep 'lr-find: ' a.log | tr '\n' '|')"
grep -q "^lr-find: steepest descent of the smoothed loss at lr " a.log && grep -q "^lr-find: smallest smoothed loss " a.log \
  && ok "both readings of the curve printed" || bad "readings: $(grep 'lr-find: ' a.log | tr '\n' '|')"
[ "$(png_size a.png)" = 800x500 ] && ok "PNG 800x500" || bad "PNG: $(png_size a.png)"

# A ramp into divergence stops early and says so.
"$bin" lr-find "${common[@]}" --steps 60 --lr-min 1e-3 --lr-max 1e4 --out d >d.log 2>&1 \
  || bad "diverging lr-find failed: $(grep nndist: d.log)"
n=$(sed -n 's/^lr-find: stopped at step \([0-9]*\) of 60 .*diverged$/\1/p' d.log)
[ -n "$n" ] && [ "$n" -lt 60 ] && [ "$(rows d.csv)" = "$n" ] \
  && ok "diverged at step $n of 60: said, and $n rows" || bad "divergence: '$n', $(rows d.csv) rows: $(grep 'lr-find: ' d.log | tr '\n' '|')"

# A step that is not finite (the guard's test hook) ends the ramp there.
"$bin" lr-find "${common[@]}" --steps 30 --lr-min 1e-4 --lr-max 0.1 --fault-nan-step 12 --out nan >nan.log 2>&1
grep -q "^lr-find: stopped at step 12 of 30 (lr [0-9.e-]*): the step's loss or gradient is not finite: diverged$" nan.log \
  && [ "$(rows nan.csv)" = 12 ] && ok "a non-finite step 12 ends the ramp: said, 12 rows" \
  || bad "non-finite step: $(grep 'lr-find: \|nndist:' nan.log | tr '\n' '|'), $(rows nan.csv) rows"

# 2 ranks: the same test; --deterministic gives 1 rank's curve exactly.
"$mpiexec" "$npflag" 2 "$bin" lr-find "${common[@]}" --steps 30 --lr-min 1e-4 --lr-max 0.1 --out r2 >r2.log 2>&1 \
  && [ "$(rows r2.csv)" -ge 1 ] && ok "2 ranks: $(rows r2.csv) rows" || bad "2 ranks: $(tail -2 r2.log)"
"$bin" lr-find "${common[@]}" --steps 30 --lr-min 1e-4 --lr-max 0.1 --deterministic --micro-batches 2 --out e1 \
  >e1.log 2>&1
"$mpiexec" "$npflag" 2 "$bin" lr-find "${common[@]}" --steps 30 --lr-min 1e-4 --lr-max 0.1 --deterministic \
  --micro-batches 2 --out e2 >e2.log 2>&1
[ -s e1.csv ] && cmp -s e1.csv e2.csv && ok "--deterministic: 2 ranks' CSV is 1 rank's" \
  || bad "--deterministic: $(diff e1.csv e2.csv | head -3 | tr '\n' '|')"

# The train options' config file is read.
printf 'hidden = 16\nopt = adam\n' > c.ini
"$bin" lr-find --config c.ini --data d.h5 --batch 32 --threads 1 --steps 20 --out c >c.log 2>&1 \
  && grep -q "hidden = 16" c.log && grep -q "model 20-16:relu-4" c.log && ok "--config read" || bad "--config: $(tail -2 c.log)"

# Refusals on 2 ranks: one line of ours (mpiexec adds its own), exit 2, no hang.
refuse() { # expected-line-pattern args...
  local want=$1
  shift
  timeout 150 "$mpiexec" "$npflag" 2 "$bin" lr-find "${common[@]}" "$@" --out x >/dev/null 2>refused.err
  rc=$?
  out=$(grep '^nndist' refused.err)
  [ $rc -eq 2 ] && [ "$(wc -l <<< "$out")" -eq 1 ] && grep -q "$want" <<< "$out" \
    && ok "refused in one line: $out" || bad "$* -> rc $rc: $out"
}
refuse "^nndist: error: --lr-min 0.1 must be below --lr-max 0.01$" --lr-min 0.1 --lr-max 0.01
refuse "^nndist: error: .*steps.*>= 10" --steps 5
refuse "^nndist: error: lr-find: --mode async: .*sync mode only$" --mode async
refuse "^nndist: error: lr-find: --resume .*" --resume auto
refuse "^nndist: error: lr-find: --opt lbfgs: .*" --opt lbfgs --lr 1
[ ! -e x.csv ] && ok "nothing written by a refused run" || bad "x.csv written"
out=$("$bin" lr-find --data d.h5 --out /nonexistent/dir/p 2>&1)
[ $? -ne 0 ] && grep -q "^nndist: error: --out /nonexistent/dir/p: cannot write" <<< "$out" \
  && ok "an unwritable --out refused before training" || bad "--out: $out"
"$bin" help lr-find | grep -q -- "--lr-max" && ok "help lr-find lists its options" || bad "help lr-find"
echo "$passed passed, $failed failed"
[ $failed -eq 0 ]
