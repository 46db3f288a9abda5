#!/usr/bin/env bash
# launch/hpsearch on a small synthetic set: R rounds of K trials all run,
# the second round's ranges are narrowed around the first round's best, and
# the final table is sorted by validation accuracy. Usage: test_hpsearch.sh NNDIST TMPDIR
set -euo pipefail
bin=$1 tmp=$2/hpsearch
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
rm -rf "$tmp" && mkdir -p "$tmp"
"$bin" data synth --out "$tmp/d.h5" --rows 2000 --val-rows 400 --features 10 --classes 3 --separation 1 >/dev/null
out=$(NNDIST_BUILD=$(dirname "$bin") "$root/launch/hpsearch" --data "$tmp/d.h5" --trials 3 --rounds 2 --epochs 2 \
      --np 1 --arch "10-16:bn:relu:drop{drop}-3" --out "$tmp/run" -- --threads 1)
echo "$out"
fail() { echo "FAIL: $*"; exit 1; }
[ "$(grep -c '^  trial' <<< "$out")" -eq 6 ] || fail "expected 6 trials"
[ "$(grep -vc '^failed' "$tmp/run/trials.tsv")" -eq 6 ] || fail "a trial failed"
grep -q '^round 2: lr in \[' <<< "$out" || fail "no second round"
# The summary table (after its header) is sorted by validation accuracy, descending.
accs=$(sed -n '/^  val_acc/,$p' <<< "$out" | tail -n +2 | awk '{print $1}')
[ "$accs" = "$(sort -g -r <<< "$accs")" ] || fail "table not sorted"
# Round 2's rate range is a decade around round 1's best rate.
best1=$(head -3 "$tmp/run/trials.tsv" | sort -g -r -k1,1 | head -1 | cut -f2)
range=$(grep '^round 2' <<< "$out" | sed 's/.*lr in \[\([^]]*\)\].*/\1/')
awk -v b="$best1" -v r="$range" 'BEGIN { split(r, a, ":"); exit !(a[1] < b && b < a[2] && a[2] / a[1] > 9 && a[2] / a[1] < 11) }' \
  || fail "round 2 range $range is not around $best1"
# Bad input: a file without /val is refused with one line.
"$bin" data synth --out "$tmp/noval.h5" --rows 100 >/dev/null
if err=$("$root/launch/hpsearch" --data "$tmp/noval.h5" 2>&1); then fail "accepted a file without /val"; fi
grep -q "has no /val split" <<< "$err" || fail "message: $err"
echo "1 passed, 0 failed"
