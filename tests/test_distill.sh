#!/usr/bin/env bash
# Distillation (issue 16): --teacher with --distill-alpha 0 is bit-identical
# to a run without a teacher; a student started from its teacher's weights
# learning only the teacher's answers (alpha 1, T 1) has nothing to learn
# (loss ~0, weights still), on 2 ranks; a teacher with its own
# normalization teaches a student on another; bad combinations
# are refused in one line. Usage: test_distill.sh NNDIST TMPDIR MPIEXEC NPFLAG
set -uo pipefail
bin=$1 tmp=$2/distill mpiexec=$3 np=$4
source "$(dirname "${BASH_SOURCE[0]}")/checks.sh"
rm -rf "$tmp" && mkdir -p "$tmp" && cd "$tmp" || exit 1
run2() { timeout -k 5 120 "$mpiexec" "$np" 2 --oversubscribe "$bin" "$@"; }
"$bin" data synth --out d.h5 --rows 1024 --test-rows 512 --features 16 --classes 4 --separation 1.5 >/dev/null
q="--threads 1 --progress none --quiet"
"$bin" train --data d.h5 --hidden 48 --epochs 3 --save t.h5 $q >t.log 2>&1 || bad "teacher: $(cat t.log)"
"$bin" train --data d.h5 --hidden 48 --epochs 3 --normalize minmax --save tm.h5 $q >tm.log 2>&1 \
  || bad "minmax teacher: $(cat tm.log)"

# alpha 0: the teachers' pass changes nothing (with noise augmentation, 2 teachers).
s="--data d.h5 --hidden 8 --epochs 2 --input-noise 0.1 $q"
"$bin" train $s --save plain.h5 >plain.log 2>&1 || bad "plain student: $(cat plain.log)"
"$bin" train $s --teacher t.h5,tm.h5 --distill-alpha 0 --save a0.h5 >a0.log 2>&1 || bad "alpha 0: $(cat a0.log)"
h5diff -q plain.h5 a0.h5 /model /model >/dev/null && ok "--distill-alpha 0 is bit-identical to no teacher" \
  || bad "--distill-alpha 0 changed the run"

# Its own answers to learn: nothing moves (q - p is rounding: < 1e-5 over an epoch).
self="--data d.h5 --hidden 48 --epochs 1 --init-from t.h5 --teacher t.h5 --distill-t 1 --threads 1 --progress none"
run2 train $self --distill-alpha 1 --save self.h5 >self.log 2>&1 || bad "self-teacher: $(tail -3 self.log)"
loss=$(sed -n 's/^epoch .*train loss \([-0-9.e]*\).*/\1/p' self.log)
awk -v l="$loss" 'BEGIN { exit !(l < 1e-4 && l > -1e-4) }' && ok "learning its own answers: train loss $loss" \
  || bad "self-teacher train loss $loss"
h5diff -q -d 1e-5 t.h5 self.h5 /model /model >/dev/null && ok "learning its own answers: the weights stay" \
  || bad "self-teacher weights moved"
run2 train $self --distill-alpha 0.5 --save half.h5 --quiet >half.log 2>&1
h5diff -q -d 1e-5 t.h5 half.h5 /model /model >/dev/null && bad "alpha 0.5 did not move the weights either" \
  || ok "with the labels mixed in (alpha 0.5) the weights move"

# A teacher with its own (minmax) normalization, the student on global: the
# student learns from the teacher alone (alpha 1). (On these blobs the
# teacher classifies about as well without the map, so this checks that
# the run works, not the map itself.)
"$bin" train --data d.h5 --hidden 16 --epochs 3 --teacher tm.h5 --distill-alpha 1 --distill-t 2 --summary m.json \
  --save none --threads 1 --progress none >m.log 2>&1 || bad "minmax teacher student: $(tail -2 m.log)"
grep -q "^nndist train: teacher tm.h5: 16-48:relu-4, .* parameters, its own normalization$" m.log \
  && ok "the teacher line names its own normalization" || bad "teacher line: $(grep teacher m.log)"
tacc=$("$bin" eval --checkpoint tm.h5 --data d.h5 --json | sed -n 's/.*"accuracy": \([0-9.]*\).*/\1/p')
acc=$(num m.json test_accuracy)
awk -v a="$acc" -v t="$tacc" 'BEGIN { exit !(a > t - 0.05) }' \
  && ok "learns from a teacher of its own normalization alone: $acc (teacher $tacc)" || bad "student $acc, teacher $tacc"

refused "--teacher with hinge" "^nndist: error: --teacher: distillation takes --loss softmax_ce, not hinge$" \
  --data d.h5 --teacher t.h5 --loss hinge
refused "--teacher with mixup" "^nndist: error: --teacher: not with --mixup" --data d.h5 --teacher t.h5 --mixup 0.2
"$bin" data synth --out d3.h5 --rows 256 --features 16 --classes 3 >/dev/null
refused "a teacher of another class count" "^nndist: error: --teacher t.h5: 16 inputs and 4 classes, this data has 16 and 3$" \
  --data d3.h5 --teacher t.h5 --threads 1
checks_done
