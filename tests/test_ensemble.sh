#!/usr/bin/env bash
# Ensembles (issue 16): `nndist eval --checkpoint A,B` gives each member's
# figures and their ensemble's (the mean of softmax probabilities), a model
# with itself is the model, mismatched members are refused in one line, and
# a run's snapshot ensemble (--ensemble last:K / best:K) is reported and
# reproduced by `nndist eval` over the members it wrote; on float targets
# too (regression: RMSE of the mean output; multi-label: attribute accuracy).
# Usage: test_ensemble.sh NNDIST TMPDIR [numpy]
# With `numpy`, only the independent check: the ensemble's accuracy and NLL
# recomputed from the checkpoints with numpy and h5py (exit 77, skipped,
# without them).
set -uo pipefail
bin=$1 tmp=$2/ensemble-${3:-main}
source "$(dirname "${BASH_SOURCE[0]}")/checks.sh"
rm -rf "$tmp" && mkdir -p "$tmp" && cd "$tmp" || exit 1
# eval --json's own figures (before its per-class and member lists)
top() { sed -n "s/^{[^[]*\"$2\": \([-0-9.e]*\).*/\1/p" "$1"; }
near() { awk -v a="$1" -v b="$2" -v t="$3" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(a != "" && d <= t) }'; }
train() { "$bin" train --batch 32 --lr 0.05 --progress none --threads 1 --quiet "$@" >/dev/null 2>train.err \
  || bad "training $*: $(cat train.err)"; }

"$bin" data synth --out d.h5 --rows 2000 --test-rows 500 --val-rows 300 --features 20 --classes 4 \
  --separation 0.7 >/dev/null
# Two members of different architectures and seeds.
train --data d.h5 --hidden 32 --epochs 2 --seed 1 --save a.h5
train --data d.h5 --hidden 16,16 --epochs 1 --seed 2 --save b.h5

if [ "${3:-}" = numpy ]; then
  py=/usr/bin/python3
  [ -x $py ] && $py -c 'import numpy, h5py' 2>/dev/null || { echo "SKIP: no numpy/h5py in $py"; exit 77; }
  mpiexec -n 2 "$bin" eval --checkpoint a.h5,b.h5 --data d.h5 --json >e.json 2>&1 || bad "eval: $(cat e.json)"
  # A plain ReLU MLP's forward pass from the checkpoint's arrays.
  $py - a.h5 b.h5 >np.txt <<'EOF' || bad "numpy: $(cat np.txt)"
import sys, h5py, numpy as np
d = h5py.File("d.h5", "r")
x, y = d["test/x"][...].astype(np.float64), d["test/y"][...]
probs = []
for path in sys.argv[1:]:
    f = h5py.File(path, "r")
    h = (x - f["normalization/mean"][...]) * f["normalization/inv_std"][...]
    layers = sorted(f["model"].keys(), key=lambda n: int(n[5:]))
    for i, name in enumerate(layers):
        h = h @ f["model"][name]["W"][...].T.astype(np.float64) + f["model"][name]["b"][...]
        if i < len(layers) - 1: h = np.maximum(h, 0)
    e = np.exp(h - h.max(axis=1, keepdims=True))
    probs.append(e / e.sum(axis=1, keepdims=True))
p = np.mean(probs, axis=0)
print((p.argmax(axis=1) == y).mean(), -np.log(p[np.arange(len(y)), y]).mean())
EOF
  read -r np_acc np_loss <np.txt
  acc=$(top e.json accuracy) loss=$(top e.json loss)
  echo "numpy: accuracy $np_acc loss $np_loss; eval: accuracy $acc loss $loss"
  near "$acc" "$np_acc" 1e-9 && ok "the ensemble's accuracy is numpy's mean of probabilities ($acc)" \
    || bad "accuracy: eval $acc, numpy $np_acc"
  near "$loss" "$np_loss" 1e-4 && ok "the ensemble's NLL is numpy's ($loss)" || bad "NLL: eval $loss, numpy $np_loss"
  echo "$passed passed, $failed failed"
  [ $failed -eq 0 ]
  exit
fi

# Each member's figures are its single eval's; the ensemble of a model with
# itself is the model.
"$bin" eval --checkpoint a.h5 --data d.h5 --json >a.json
"$bin" eval --checkpoint b.h5 --data d.h5 --json >b.json
mpiexec -n 2 "$bin" eval --checkpoint a.h5,b.h5 --data d.h5 --json >ab.json 2>&1 || bad "eval a,b: $(cat ab.json)"
m1=$(sed -n 's/.*"members": \[{[^}]*"accuracy": \([0-9.e-]*\)}.*/\1/p' ab.json)
m2=$(sed -n 's/.*"members": \[{[^}]*}, {[^}]*"accuracy": \([0-9.e-]*\)}.*/\1/p' ab.json)
near "$m1" "$(top a.json accuracy)" 1e-9 && near "$m2" "$(top b.json accuracy)" 1e-9 \
  && ok "each member's accuracy is its own ($m1, $m2)" || bad "members $m1 $m2: $(cat a.json b.json)"
grep -q '"ensemble": "mean of softmax probabilities"' ab.json && ok "the ensemble says what it averages" \
  || bad "no ensemble kind: $(cat ab.json)"
"$bin" eval --checkpoint a.h5,a.h5 --data d.h5 --json >aa.json
near "$(top aa.json accuracy)" "$(top a.json accuracy)" 1e-9 && near "$(top aa.json loss)" "$(top a.json loss)" 1e-6 \
  && ok "a model with itself is the model" || bad "a,a: $(cat aa.json)"
mpiexec -n 2 "$bin" eval --checkpoint a.h5,b.h5 --data d.h5 >ab.txt 2>&1
grep -q "^member 2 b.h5: loss [0-9.]*  accuracy [0-9.]*$" ab.txt \
  && grep -q "^ensemble (mean of softmax probabilities): loss [0-9.]*  accuracy [0-9.]*$" ab.txt \
  && ok "text: a line per member and the ensemble's" || bad "text: $(cat ab.txt)"

# Members that do not fit: other features, another loss.
"$bin" data synth --out w.h5 --rows 500 --test-rows 100 --features 12 --classes 4 >/dev/null
train --data w.h5 --hidden 8 --epochs 1 --save w.h5.model
out=$(mpiexec -n 2 "$bin" eval --checkpoint a.h5,w.h5.model --data d.h5 2>&1)
[ $? -ne 0 ] && [ "$(grep -c 'nndist: error' <<< "$out")" = 1 ] \
  && grep -q "^nndist: error: d.h5: /test/x has 20 features, the checkpoint's model takes 12$" <<< "$out" \
  && ok "a member of other input width: refused in one line" || bad "width: $out"
train --data d.h5 --hidden 32 --epochs 1 --loss hinge --save h.h5
out=$("$bin" eval --checkpoint a.h5,h.h5 --data d.h5 2>&1)
[ $? -ne 0 ] && grep -q "^nndist: error: h.h5: trained for hinge, a.h5 for softmax_ce: an ensemble averages one kind" <<< "$out" \
  && ok "members of different losses: refused" || bad "losses: $out"
"$bin" eval --checkpoint h.h5,h.h5 --data d.h5 | grep -q "^ensemble (mean of scores)" \
  && ok "hinge members: the mean of scores" || bad "hinge ensemble"

# A run's snapshot ensemble, reported and reproduced from its members.
mpiexec -n 2 "$bin" train --data d.h5 --hidden 32 --batch 32 --epochs 4 --lr 0.05 --progress none --threads 1 \
  --ensemble last:3 --checkpoint-dir ck --summary s.json >run.log 2>&1 || bad "--ensemble run: $(tail -3 run.log)"
ens=$(num s.json ensemble_test_accuracy) ens_loss=$(num s.json ensemble_test_loss)
grep -q "; final test accuracy .*; ensemble $(printf %.4f "$ens")$" run.log && ok "the final line gives the ensemble ($ens)" \
  || bad "final line: $(grep 'final test' run.log)"
members=$(ls ck/snapshot-ep*.h5 2>/dev/null | tr '\n' ',' | sed 's/,$//')
[ "$members" = "ck/snapshot-ep002.h5,ck/snapshot-ep003.h5,ck/snapshot-ep004.h5" ] \
  && ok "the last 3 epochs' members are written" || bad "members: $members"
mpiexec -n 2 "$bin" eval --checkpoint "$members" --data d.h5 --json >snap.json 2>&1
near "$(top snap.json accuracy)" "$ens" 1e-6 && near "$(top snap.json loss)" "$ens_loss" 1e-6 \
  && ok "eval over the members reproduces it ($ens, loss $ens_loss)" \
  || bad "eval: $(top snap.json accuracy) $(top snap.json loss), run: $ens $ens_loss"
# best:2 keeps the two best epochs by validation accuracy.
mpiexec -n 2 "$bin" train --data d.h5 --hidden 32 --batch 32 --epochs 5 --lr 0.2 --progress none --threads 1 \
  --ensemble best:2 --metrics m.jsonl --summary sb.json --save none >best.log 2>&1 || bad "best:2: $(tail -3 best.log)"
want=$(sed -n 's/.*"epoch": \([0-9]*\).*"val_accuracy": \([0-9.e-]*\).*/\2 \1/p' m.jsonl | sort -k1,1gr -k2,2n \
  | head -2 | awk '{print $2}' | sort -n | tr '\n' ' ')
got=$(grep -o '"members": \[.*\]' sb.json | grep -o '"epoch": [0-9]*' | awk '{print $2}' | sort -n | tr '\n' ' ')
[ -n "$got" ] && [ "$got" = "$want" ] && ok "best:2 keeps the epochs of the best validation accuracy ($got)" \
  || bad "best:2 kept '$got', the best are '$want'"
grep -q '"ensemble_val_accuracy": [0-9]' sb.json && ok "with /val, the ensemble's validation figure" \
  || bad "no ensemble_val_accuracy"
# Refused: best:K without /val, a bad value, async.
out=$("$bin" train --data w.h5 --ensemble best:3 --progress none 2>&1)
grep -q "^nndist: error: --ensemble best:3: w.h5 has no /val split" <<< "$out" && ok "best:K without /val: refused" \
  || bad "best without val: $out"
out=$("$bin" train --data d.h5 --ensemble last:1 2>&1)
[ $? -eq 2 ] && grep -q "^nndist: error: --ensemble: 'last:1' is not last:K or best:K" <<< "$out" \
  && ok "--ensemble last:1: refused" || bad "last:1: $out"
out=$(mpiexec -n 2 "$bin" train --data d.h5 --mode async --ensemble last:2 --progress none 2>&1)
[ "$(grep -c 'nndist: error' <<< "$out")" = 1 ] && grep -q "^nndist: error: --ensemble: not with --mode async" <<< "$out" \
  && ok "--ensemble in async mode: refused in one line" || bad "async: $out"

# Float targets: regression (l2, the mean of outputs) and multi-label
# (sigmoid_bce, the mean of sigmoid probabilities; binary_hinge, of scores).
first() { grep -o "\"$2\": [-0-9.e]*" "$1" | head -1 | sed 's/.*: //'; }
"$bin" data synth --out r.h5 --rows 800 --test-rows 300 --val-rows 200 --features 20 --targets 2 >/dev/null
mpiexec -n 2 "$bin" train --data r.h5 --loss l2 --hidden 16 --batch 32 --epochs 3 --lr 0.02 --progress none \
  --threads 1 --ensemble last:2 --checkpoint-dir rck --summary rs.json --save r1.h5 >rrun.log 2>&1 \
  || bad "l2 --ensemble run: $(tail -3 rrun.log)"
for split in val test; do
  "$bin" eval --checkpoint r1.h5 --data r.h5 --split $split --json >r1-$split.json 2>&1
  near "$(top r1-$split.json rmse)" "$(first rs.json ${split}_rmse)" 1e-5 \
    && near "$(top r1-$split.json loss)" "$(first rs.json ${split}_loss)" 1e-5 \
    && ok "l2: eval of the saved model gives the run's $split rmse and loss ($(top r1-$split.json rmse))" \
    || bad "l2 $split: eval $(cat r1-$split.json), run $(first rs.json ${split}_rmse)"
done
rmembers=$(ls rck/snapshot-ep*.h5 2>/dev/null | tr '\n' ',' | sed 's/,$//')
mpiexec -n 2 "$bin" eval --checkpoint "$rmembers" --data r.h5 --json >rsnap.json 2>&1
near "$(top rsnap.json rmse)" "$(first rs.json ensemble_test_rmse)" 1e-6 \
  && near "$(top rsnap.json loss)" "$(first rs.json ensemble_test_loss)" 1e-6 \
  && grep -q '"ensemble": "mean of outputs"' rsnap.json \
  && ok "l2: eval over the members reproduces the run's ensemble ($(top rsnap.json rmse))" \
  || bad "l2 ensemble: eval $(cat rsnap.json), run $(first rs.json ensemble_test_rmse)"
# The overall RMSE is the root of the mean of the per-output squares.
grep -o '"per_output_rmse": \[[^]]*\]' rsnap.json | tr -d '[],' | awk -v r="$(top rsnap.json rmse)" \
  '{ s = 0; for (i = 2; i <= NF; ++i) s += $i * $i; d = sqrt(s / (NF - 1)) - r; exit !(NF == 3 && d < 1e-5 && d > -1e-5) }' \
  && ok "l2: per-output rmse, consistent with the overall" || bad "per-output: $(cat rsnap.json)"
"$bin" eval --checkpoint "$rmembers" --data r.h5 >rsnap.txt 2>&1
grep -q "^ensemble (mean of outputs): loss [0-9.]*  rmse [0-9.]*$" rsnap.txt && grep -q "^per-output rmse: 0:[0-9.]* 1:" rsnap.txt \
  && ! grep -q "confusion" rsnap.txt && ok "l2 text: rmse lines, per-output in place of the confusion matrix" \
  || bad "l2 text: $(cat rsnap.txt)"
"$bin" data synth --out ml.h5 --rows 800 --test-rows 300 --features 20 --targets 3 --multilabel >/dev/null
"$bin" train --data ml.h5 --loss sigmoid_bce --hidden 16 --batch 32 --epochs 3 --lr 0.05 --progress none \
  --threads 1 --ensemble last:2 --checkpoint-dir mck --summary ms.json --save m1.h5 >mrun.log 2>&1 \
  || bad "sigmoid_bce --ensemble run: $(tail -3 mrun.log)"
"$bin" eval --checkpoint m1.h5 --data ml.h5 --json >m1.json 2>&1
mmembers=$(ls mck/snapshot-ep*.h5 2>/dev/null | tr '\n' ',' | sed 's/,$//')
mpiexec -n 2 "$bin" eval --checkpoint "$mmembers" --data ml.h5 --json >msnap.json 2>&1
near "$(top m1.json attribute_accuracy)" "$(first ms.json test_attribute_accuracy)" 1e-6 \
  && near "$(top msnap.json attribute_accuracy)" "$(first ms.json ensemble_test_attribute_accuracy)" 1e-6 \
  && near "$(top msnap.json loss)" "$(first ms.json ensemble_test_loss)" 1e-6 \
  && grep -q '"ensemble": "mean of sigmoid probabilities"' msnap.json \
  && ok "sigmoid_bce: eval gives the run's attribute accuracy and its ensemble's ($(top msnap.json attribute_accuracy))" \
  || bad "sigmoid_bce: $(cat m1.json msnap.json), run $(first ms.json ensemble_test_attribute_accuracy)"
train --data ml.h5 --loss binary_hinge --hidden 16 --epochs 2 --save bh.h5
"$bin" eval --checkpoint bh.h5,bh.h5 --data ml.h5 --json >bh2.json 2>&1
"$bin" eval --checkpoint bh.h5 --data ml.h5 --json >bh1.json 2>&1
near "$(top bh2.json attribute_accuracy)" "$(top bh1.json attribute_accuracy)" 1e-9 \
  && near "$(top bh2.json loss)" "$(top bh1.json loss)" 1e-5 && grep -q '"ensemble": "mean of scores"' bh2.json \
  && ok "binary_hinge: the mean of scores; a model with itself is the model" || bad "binary_hinge: $(cat bh1.json bh2.json)"
# Refused in one line: a label model on float targets, the reverse, other K.
out=$(mpiexec -n 2 "$bin" eval --checkpoint a.h5 --data r.h5 2>&1)
[ $? -ne 0 ] && [ "$(grep -c 'nndist: error' <<< "$out")" = 1 ] \
  && grep -q "^nndist: error: a.h5: trained for softmax_ce (class labels), but r.h5 /test/y holds float targets$" <<< "$out" \
  && ok "a label model on float targets: refused in one line" || bad "label on float: $out"
out=$("$bin" eval --checkpoint r1.h5 --data d.h5 2>&1)
[ $? -ne 0 ] && [ "$(grep -c 'nndist: error' <<< "$out")" = 1 ] \
  && grep -q "^nndist: error: r1.h5: trained for l2 (float targets), but d.h5 /test/y holds class labels$" <<< "$out" \
  && ok "a regression model on labels: refused in one line" || bad "float on labels: $out"
out=$("$bin" eval --checkpoint r1.h5 --data ml.h5 2>&1)
[ $? -ne 0 ] && grep -q "^nndist: error: ml.h5: /test/y has 3 targets per row, the checkpoint's model outputs 2$" <<< "$out" \
  && ok "other target count: refused" || bad "K: $out"
checks_done
