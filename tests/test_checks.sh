#!/usr/bin/env bash
# gradcheck and sanity details (issue 16): --h sets the step, --verbose
# prints each sampled parameter's analytic and numeric values with their
# relative error (recomputed here), --checkpoint checks at a trained run's
# weights with its configuration; sanity's L2 check reports the trainer's
# penalty and the closed form. Usage: test_checks.sh NNDIST TMPDIR
set -uo pipefail
bin=$1 tmp=$2/checks
rm -rf "$tmp" && mkdir -p "$tmp" && cd "$tmp" || exit 1
passed=0 failed=0
ok() { echo "ok: $*"; passed=$((passed + 1)); }
bad() { echo "FAIL: $*"; failed=$((failed + 1)); }
"$bin" data synth --out d.h5 --rows 400 --test-rows 100 --features 12 --classes 3 >/dev/null
"$bin" gradcheck --data d.h5 --hidden 10 --batch-norm --h 1e-4 --verbose >v.log 2>&1 \
  && ok "gradcheck --h 1e-4 --verbose passes" || bad "gradcheck --verbose: $(tail -2 v.log)"
grep -q "h = 0.0001," v.log && ok "the step is 1e-4" || bad "step: $(head -1 v.log)"
for g in dense0/W dense0/b bn0/gamma bn0/beta dense1/W; do
  grep -q "^    $g *\[[0-9]*\]  analytic" v.log && ok "raw values of $g" || bad "no raw values of $g"
done
# Each printed relative error is |a-n|/max(|a|,|n|) of the printed values
# to the printed precision (where both are well above the float32 floor).
awk '/analytic .* numeric/ { a = $(NF - 4); n = $(NF - 2); r = $NF; d = a - n; if (d < 0) d = -d;
       m = a < 0 ? -a : a; nn = n < 0 ? -n : n; if (nn > m) m = nn;
       if (m > 1e-2) { c++; e = d / m - r; if (e < 0) e = -e; if (e > 0.02 * r + 5e-8) bad++ } }
     END { exit !(c > 10 && bad == 0) }' v.log \
  && ok "the printed relative errors follow from the printed values" || bad "relative errors do not match the values"
"$bin" train --data d.h5 --hidden 10 --dropout 0.3 --epochs 2 --progress none --threads 1 --checkpoint-dir ck \
  --save none >train.log 2>&1 || bad "training failed: $(grep nndist: train.log)"
ck=$(ls ck/ckpt-step*.h5 | sort | tail -1)
"$bin" gradcheck --checkpoint "$ck" >c.log 2>&1 && grep -q "at the weights of $ck (step [1-9]" c.log \
  && grep -q "^gradcheck 12-10:relu:drop0.3-3," c.log && ok "gradcheck --checkpoint: its arch, its weights, PASS" \
  || bad "gradcheck --checkpoint: $(cat c.log)"
out=$("$bin" gradcheck --checkpoint "$ck" --arch 12-5:relu-3 2>&1)
[ $? -ne 0 ] && grep -q "architecture 12-10:relu:drop0.3-3, this run has 12-5:relu-3" <<<"$out" \
  && ok "--checkpoint with another --arch: refused" || bad "arch mismatch: $out"
"$bin" sanity --data d.h5 --hidden 10 --weight-decay 0.01 --l1 0.001 >s.log 2>&1
line=$(grep "raises the loss" s.log)
p=$(sed -n "s/.*trainer's penalty \([0-9.e+-]*\), closed form \([0-9.e+-]*\)).*/\1 \2/p" <<<"$line")
awk -v p="$p" 'BEGIN { split(p, v, " "); d = v[1] - v[2]; if (d < 0) d = -d; exit !(v[1] > 0 && d <= 1e-4 * v[2]) }' \
  && grep -q "^PASS  L2 1.0e-02 + L1" <<<"$line" && ok "sanity: trainer's penalty = closed form ($p)" \
  || bad "sanity: $line"
echo "$passed passed, $failed failed"
[ $failed -eq 0 ]
