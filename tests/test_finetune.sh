#!/usr/bin/env bash
# Fine-tuning (issue 16): a net pretrained on 6 classes, then --init-from
# it with a new 3-class head and --freeze 0-1 (a frozen base with batch
# norm) on other data, on 2 ranks and on 1. The frozen tensors, running
# statistics included, come out bit-identical to the pretrained ones, the
# head learns, a fine-tuning run resumes exactly, and bad combinations are
# refused in one line. Usage: test_finetune.sh NNDIST TMPDIR MPIEXEC NPFLAG
set -uo pipefail
bin=$1 tmp=$2/finetune mpiexec=$3 np=$4
source "$(dirname "${BASH_SOURCE[0]}")/checks.sh"
rm -rf "$tmp" && mkdir -p "$tmp" && cd "$tmp" || exit 1
run2() { timeout -k 5 120 "$mpiexec" "$np" 2 --oversubscribe "$bin" "$@"; }
frozen="dense0/W dense0/b bn0/gamma bn0/beta bn0/running_mean bn0/running_var
        dense1/W dense1/b bn1/gamma bn1/beta bn1/running_mean bn1/running_var"
# same A B: every frozen tensor of A's /model equals B's, bit for bit (h5diff compares exactly).
same() {
  for t in $frozen; do h5diff -q "$1" "$2" "/model/$t" "/model/$t" >/dev/null || { echo "$t differs"; return 1; }; done
}
"$bin" data synth --out pre.h5 --rows 2048 --test-rows 512 --features 24 --classes 6 --seed 1 >/dev/null
"$bin" data synth --out ft.h5 --rows 1024 --test-rows 512 --features 24 --classes 3 --seed 2 --separation 2 >/dev/null
common="--hidden 32,16 --batch-norm --batch 32 --threads 1 --progress none"
"$bin" train --data pre.h5 $common --epochs 3 --save pre.model.h5 --quiet >pre.log 2>&1 \
  || bad "pretraining failed: $(cat pre.log)"
"$bin" info pre.model.h5 | grep -q "^    dense0/W 32x24, dense0/b 32, bn0/gamma 32" \
  && ok "nndist info lists the tensor names" || bad "info: $("$bin" info pre.model.h5 | grep -A4 tensors)"

tune="--data ft.h5 $common --epochs 3 --init-from pre.model.h5 --freeze 0-1 --opt adam --lr 0.01 --ref-batch 64 --weight-decay 1e-3"
run2 train $tune --summary two.json --save two.model.h5 >two.log 2>&1 || bad "2-rank fine-tuning failed: $(tail -3 two.log)"
"$bin" train $tune --batch 64 --summary one.json --save one.model.h5 >one.log 2>&1 \
  || bad "1-rank fine-tuning failed: $(tail -3 one.log)"
grep -q "^nndist train: --init-from pre.model.h5: 12 of 14 tensors loaded, kept fresh: dense2/W 6x16 -> 3x16, dense2/b 6 -> 3; its normalization statistics$" two.log \
  && ok "one line says what was loaded and what was kept fresh" || bad "the summary line: $(grep init-from two.log)"
for r in one two; do
  why=$(same pre.model.h5 $r.model.h5) && ok "$r rank(s): the frozen base (weights, batch norm, its running statistics) is bit-identical" \
    || bad "$r rank(s): $why"
  acc=$(num $r.json test_accuracy)
  awk -v a="$acc" 'BEGIN { exit !(a > 0.9) }' && ok "$r rank(s): the new head learns (test accuracy $acc)" \
    || bad "$r rank(s): test accuracy $acc"
done
# Without --freeze the base moves.
"$bin" train ${tune/--freeze 0-1/} --save free.model.h5 --quiet >free.log 2>&1
same pre.model.h5 free.model.h5 >/dev/null && bad "without --freeze the base did not change" \
  || ok "without --freeze the loaded base is trained"

# A fine-tuning run resumes exactly: 3 epochs straight, or 2 then a resume.
resume="$tune --checkpoint-dir ck --resume auto --quiet"
run2 train ${resume/ ck / ck2 } --save straight.h5 >straight.log 2>&1 || bad "straight run: $(tail -2 straight.log)"
run2 train $resume --epochs 2 --save half.h5 >half.log 2>&1 && run2 train $resume --save resumed.h5 >resumed.log 2>&1 \
  || bad "resumed run: $(tail -2 resumed.log)"
h5diff -q straight.h5 resumed.h5 /model /model >/dev/null \
  && ok "resumed after 2 epochs = 3 epochs straight, bit for bit" || bad "the resumed model differs"

# Refusals, one line each.
refused "freezing every layer" "^nndist: error: --freeze '0-2': the network has layers 0 to 2; the output layer 2 must stay trainable$" \
  --data ft.h5 $common --freeze 0-2
refused "a frozen set that is not the base" "^nndist: error: --freeze '1': the frozen layers must be the first ones" \
  --data ft.h5 $common --freeze 1
refused "--freeze with the bucketed exchange" "^nndist: error: --freeze: not with --bucket-kb" \
  --data ft.h5 $common --freeze 0 --bucket-kb 16
refused "--init-from with --resume FILE" "^nndist: error: --init-from: not with --resume FILE" \
  --data ft.h5 $common --init-from pre.model.h5 --resume pre.model.h5
"$bin" data synth --out wide.h5 --rows 256 --features 40 --classes 3 >/dev/null
refused "a checkpoint sharing no tensor" "^nndist: error: --init-from pre.model.h5: no tensor has this network's names and shapes" \
  --data wide.h5 --hidden 8 --threads 1 --init-from pre.model.h5
checks_done
