#!/usr/bin/env bash
# launch/hpsearch on small synthetic sets: a classification search picks the
# highest validation accuracy and a --loss l2 search the lowest RMSE (read
# from each run's summary JSON), round 2 narrows around round 1's best,
# some trials run with weight decay 0, staged epochs rerun the finalists,
# --jobs 2 runs trials at once, --folds 2 scores the mean of two
# --val-fold runs, trials.csv has a row per run, a deliberately bad rate
# range gets the border warning, and a search whose every trial fails
# exits 1 with one line. Usage: test_hpsearch.sh NNDIST TMPDIR
set -euo pipefail
bin=$1 tmp=$2/hpsearch
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
rm -rf "$tmp" && mkdir -p "$tmp"
export NNDIST_BIN=$bin
py=/usr/bin/python3
hp() { "$root/launch/hpsearch" --np 1 --no-plot "$@"; }
fail() { echo "FAIL: $*"; exit 1; }
# Column C (by header name) of a trials.csv, rows matching the filter awk expression F.
col() { awk -F, -v c="$2" 'NR == 1 { for (i = 1; i <= NF; ++i) if ($i == c) k = i; next } { print $k }' "$1"; }
# The best value of the last stage in a trials.csv: max (1) or min (-1).
extreme() {
  awk -F, -v s="$2" 'NR == 1 { for (i = 1; i <= NF; ++i) { if ($i == "value") v = i; if ($i == "stage") g = i }; next }
    $v != "" { if (!n || $g > top || ($g == top && s * $v > s * b)) { b = $v; top = $g }; n = 1 } END { print b }' "$1"
}

"$bin" data synth --out "$tmp/cls.h5" --rows 1200 --val-rows 300 --features 10 --classes 3 --separation 1 >/dev/null
"$bin" data synth --out "$tmp/reg.h5" --rows 1200 --val-rows 300 --features 10 --targets 2 >/dev/null
"$bin" data synth --out "$tmp/noval.h5" --rows 600 --features 10 --classes 3 >/dev/null

# --- Classification, 2 rounds x 3 trials, 2 at once: the maximum wins.
out=$(hp --data "$tmp/cls.h5" --trials 3 --rounds 2 --epochs 1 --jobs 2 --wd-zero 0.5 \
      --arch "10-16:bn:relu:drop{drop}-3" --out "$tmp/cls" -- --threads 1)
echo "$out"
csv=$tmp/cls/trials.csv
[ "$(tail -n +2 "$csv" | wc -l)" -eq 6 ] || fail "classification: expected 6 rows in trials.csv"
[ "$(col "$csv" status | grep -c '^ok$')" -eq 6 ] || fail "classification: a trial failed"
[ "$(col "$csv" metric | sort -u)" = val_accuracy ] || fail "classification: ranked by $(col "$csv" metric | sort -u)"
best=$(extreme "$csv" 1)
grep -q "^best: .*: val acc $(printf '%.4g' "$best") " <<< "$out" || fail "classification: the best is not the max $best"
grep -q '^round 2: lr in \[' <<< "$out" || fail "no second round"
# Round 2's rate range is a decade around round 1's best rate.
best1=$(awk -F, 'NR > 1 && $1 == 1 && (!n || $10 > b) { b = $10; l = $5; n = 1 } END { print l }' "$csv")
range=$(grep '^round 2' <<< "$out" | sed 's/.*lr in \[\([^]]*\)\].*/\1/')
awk -v b="$best1" -v r="$range" 'BEGIN { split(r, a, ":"); exit !(a[1] < b && b < a[2] && a[2] / a[1] > 9 && a[2] / a[1] < 11) }' \
  || fail "round 2 range $range is not around $best1"
# Weight decay 0 is drawn, and reaches nndist as 0.
zero=$(awk -F, 'NR > 1 && $6 == 0 { print $14; exit }' "$csv")
[ -n "$zero" ] || fail "no trial with weight decay 0 (--wd-zero 0.5)"
[ "$("$py" -c 'import json, sys; print(json.load(open(sys.argv[1]))["config"]["weight-decay"])' "$zero")" = 0 ] ||
  fail "$zero: the run's weight decay is not 0"

# --- Regression (--loss l2), staged: 4 trials of 1 epoch, the best 2 at 2;
# the minimum RMSE wins, the finalists are stage 1's lowest.
out=$(hp --data "$tmp/reg.h5" --stages 1:4,2:2 --rounds 1 --jobs 2 --out "$tmp/reg" -- --loss l2 --hidden 8 --threads 1)
echo "$out"
csv=$tmp/reg/trials.csv
[ "$(col "$csv" metric | sort -u)" = val_rmse ] || fail "regression: ranked by $(col "$csv" metric | sort -u)"
[ "$(awk -F, 'NR > 1 && $2 == 2' "$csv" | wc -l)" -eq 2 ] || fail "regression: expected 2 stage-2 runs"
[ "$(awk -F, 'NR > 1 && $2 == 2 { print $8 }' "$csv" | sort -u)" = 2 ] || fail "regression: stage 2 is not 2 epochs"
low2=$(awk -F, 'NR > 1 && $2 == 1 { print $10, $3 }' "$csv" | sort -g | head -n 2 | awk '{ print $2 }' | sort | xargs)
fin=$(awk -F, 'NR > 1 && $2 == 2 { print $3 }' "$csv" | sort | xargs)
[ "$low2" = "$fin" ] || fail "regression: finalists $fin are not stage 1's lowest RMSE $low2"
best=$(extreme "$csv" -1)
grep -q "^best: .*: val rmse $(printf '%.4g' "$best") " <<< "$out" || fail "regression: the best is not the min $best"
# --gather reads the records back: the same best, the next round, and the
# plot (or, without matplotlib, one line saying how to get it).
gathered=$("$root/launch/hpsearch" --gather --out "$tmp/reg" --plot)
[ "$(grep '^best: ' <<< "$gathered")" = "$(grep '^best: ' <<< "$out")" ] || fail "gather: another best: $gathered"
grep -q '^next round: --round 2 --lr [0-9.e-]*:[0-9.e-]* --wd [0-9.e-]*:[0-9.e-]* --drop' <<< "$gathered" ||
  fail "gather: no next round: $gathered"
if "$py" -c 'import matplotlib' 2> /dev/null; then
  [ -s "$tmp/reg/hpsearch.png" ] || fail "gather --plot: no $tmp/reg/hpsearch.png"
else
  grep -q "no plot: .*launch/install-deps python3-matplotlib" <<< "$gathered" || fail "gather --plot: no hint: $gathered"
fi

# --- A rate range far too low: the best rate lies at its high end, and the
# search says so.
out=$(hp --data "$tmp/reg.h5" --trials 3 --rounds 2 --epochs 1 --lr 1e-6:1e-4 --seed 4 --jobs 2 --out "$tmp/low" \
      -- --loss l2 --hidden 8 --threads 1 2>&1)
echo "$out"
grep -q '^hpsearch: warning: the best lr .* at the high end of the range searched.*widen it (--lr) upwards' <<< "$out" ||
  fail "no border warning for --lr 1e-6:1e-4"

# --- --folds 2 on a file without /val: two --val-fold runs per trial, the mean.
out=$(hp --data "$tmp/noval.h5" --folds 2 --trials 2 --rounds 1 --epochs 1 --np 2 --out "$tmp/folds" -- --hidden 8 --threads 1)
echo "$out"
csv=$tmp/folds/trials.csv
[ "$(awk -F, 'NR > 1 { print $3 "/" $4 }' "$csv" | sort | xargs)" = "1/1 1/2 2/1 2/2" ] || fail "folds: rows $(cat "$csv")"
grep -q -- '"val-fold": "2/2"' "$tmp/folds/trial-1.f2.json" || fail "folds: trial-1.f2 did not run --val-fold 2/2"
mean=$(awk -F, 'NR > 1 && $3 == 1 { s += $10; n++ } END { printf "%.4g", s / n }' "$csv")
grep -q "round 1 trial  1 .*val acc $mean +- " <<< "$out" || fail "folds: trial 1 is not the mean $mean of its folds"

# --- Every trial failing (a loss the data cannot take): status 1, one line.
if err=$(hp --data "$tmp/cls.h5" --trials 2 --rounds 1 --epochs 1 --out "$tmp/bad" -- --loss l2 --threads 1 2>&1); then
  fail "a search of failed trials exited 0: $err"
fi
grep -q "^hpsearch: every trial failed" <<< "$err" || fail "all failed: $err"
grep -q "failed: nndist: error: --loss l2" <<< "$err" || fail "all failed: the trials do not show why: $err"

# --- Bad input: one line each.
if err=$(hp --data "$tmp/noval.h5" 2>&1); then fail "accepted a file without /val"; fi
grep -q "has no /val split" <<< "$err" || fail "message: $err"
if err=$(hp --data "$tmp/cls.h5" --folds 2 2>&1); then fail "accepted --folds on a file with /val"; fi
grep -q "has its own /val" <<< "$err" || fail "message: $err"
if err=$(hp --data "$tmp/cls.h5" --lr 1e-2:1e-4 2>&1); then fail "accepted --lr 1e-2:1e-4"; fi
[ "$(wc -l <<< "$err")" -eq 1 ] || fail "more than one line: $err"
echo "1 passed, 0 failed"
