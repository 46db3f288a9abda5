#!/usr/bin/env bash
# The clean training metric (issue 16): --train-eval-rows evaluates the
# first N rows of /train in inference mode after each epoch. With N = all
# rows it must equal `nndist eval --split train` of the saved model (sync
# with a streamed shard, and async); it must not change training (dropout
# and batch norm: the weights are the same with it off); gap_accuracy is
# train_eval_accuracy - val_accuracy. Usage: test_train_eval.sh NNDIST TMPDIR MPIEXEC NPFLAG
set -uo pipefail
bin=$1 tmp=$2/train-eval mpiexec=$3 npflag=$4
rm -rf "$tmp" && mkdir -p "$tmp" && cd "$tmp" || exit 1
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
passed=0 failed=0
ok() { echo "ok: $*"; passed=$((passed + 1)); }
bad() { echo "FAIL: $*"; failed=$((failed + 1)); }
num() { sed -n "s/.*\"$2\": \([-0-9.e]*\).*/\1/p" "$1" | head -1; }
close() { awk -v a="$1" -v b="$2" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(a != "" && d <= 1e-6 * (1 + (a < 0 ? -a : a))) }'; }
run2() { "$mpiexec" "$npflag" 2 --oversubscribe "$bin" "$@"; }
"$bin" data synth --out d.h5 --rows 1200 --val-rows 300 --test-rows 300 --features 16 --classes 4 \
  --separation 0.8 >/dev/null
common=(train --data d.h5 --arch 16:drop0.2-48:bn:relu:drop0.5-10:relu:drop0.5-4 --batch 16 --epochs 2
  --progress none --threads 1)
# Sync, streamed: the subset is read apart from the stream at setup.
run2 "${common[@]}" --stream-mb 0.02 --train-eval-rows 100000 --summary s.json --metrics m.jsonl --save all.h5 \
  >sync.log 2>&1 || bad "sync run failed: $(grep nndist: sync.log)"
run2 eval --checkpoint all.h5 --data d.h5 --split train --json >eval.json 2>&1
for k in loss accuracy; do
  a=$(num s.json "train_eval_$k") b=$(num eval.json "$k")
  close "$a" "$b" && ok "sync, streamed: train_eval_$k $a = eval --split train's $b" \
    || bad "sync: train_eval_$k '$a' against eval's '$b'"
done
[ "$(num s.json train_eval_rows)" = 1200 ] && ok "train_eval_rows 1200 (all rows)" || bad "rows: $(num s.json train_eval_rows)"
last=$(tail -1 m.jsonl)
g=$(num <(echo "$last") gap_accuracy) t=$(num <(echo "$last") train_eval_accuracy) v=$(num <(echo "$last") val_accuracy)
awk -v g="$g" -v t="$t" -v v="$v" 'BEGIN { d = g - (t - v); exit !(g != "" && d < 1e-6 && d > -1e-6) }' \
  && ok "gap_accuracy $g = train_eval $t - val $v" || bad "gap_accuracy '$g', train_eval '$t', val '$v'"
grep -q "train loss .* acc .* (clean $(printf %.4f "$t")) | val" sync.log && ok "the epoch line shows it" \
  || bad "epoch line: $(grep '^epoch' sync.log | tail -1)"
# Off: the same weights (evaluation reads the parameters only), no keys.
run2 "${common[@]}" --stream-mb 0.02 --train-eval-rows 0 --summary off.json --save off.h5 >off.log 2>&1 \
  || bad "run without it failed: $(grep nndist: off.log)"
run2 eval --checkpoint off.h5 --data d.h5 --split train --json >eval-off.json 2>&1
[ "$(num eval-off.json loss)" = "$(num eval.json loss)" ] && [ -n "$(num eval.json loss)" ] \
  && ok "training unchanged by it (same train loss $(num eval.json loss))" \
  || bad "weights differ: $(num eval-off.json loss) without, $(num eval.json loss) with"
grep -q train_eval off.json && bad "--train-eval-rows 0 still reports it" || ok "--train-eval-rows 0: off"
# Async: server 0 evaluates the servers' model, the saved one.
run2 "${common[@]}" --mode async --train-eval-rows 100000 --summary a.json --save a.h5 >async.log 2>&1 \
  || bad "async run failed: $(grep nndist: async.log)"
run2 eval --checkpoint a.h5 --data d.h5 --split train --json >eval-a.json 2>&1
a=$(num a.json train_eval_accuracy) b=$(num eval-a.json accuracy)
close "$a" "$b" && ok "async: train_eval_accuracy $a = eval's $b" || bad "async: '$a' against eval's '$b'"
# Default: as many rows as /val.
run2 "${common[@]}" --epochs 1 --summary d.json --save none >default.log 2>&1
[ "$(num d.json train_eval_rows)" = 300 ] && ok "default: as many rows as /val (300)" \
  || bad "default rows: $(num d.json train_eval_rows)"
echo "$passed passed, $failed failed"
[ $failed -eq 0 ]
