#!/usr/bin/env bash
# The sanitizer build's program test: the nndist binary built with ASan and
# UBSan runs as a world of one (no mpiexec) through the paths a unit test
# does not reach: streaming with its reader thread, batch norm, dropout,
# Adam, checkpoints and an exact resume, eval, info, bench, gradcheck,
# sanity. Any ASan or UBSan finding fails it (halt_on_error). Leak checking
# is off for the program only: Open MPI's libraries and the components it
# loads and unloads leave their own allocations at exit (see
# tests/CMakeLists.txt); the unit tests keep it on.
#   sanitized_program.sh NNDIST TMPDIR
set -euo pipefail
bin=$1 tmp=$2/sanitized
rm -rf "$tmp" && mkdir -p "$tmp"
export ASAN_OPTIONS=detect_leaks=0:halt_on_error=1:abort_on_error=0 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
run() { # args...: runs nndist, fails on a non-zero exit or any sanitizer report
  if ! "$bin" "$@" > "$tmp/out" 2>&1 || grep -qE "ERROR: AddressSanitizer|runtime error:" "$tmp/out"; then
    echo "FAILED: nndist $*"; cat "$tmp/out"; exit 1
  fi
}
run data synth --out "$tmp/d.h5" --rows 3000 --test-rows 500 --val-rows 300 --features 20 --classes 4 --seed 5
common=(--data "$tmp/d.h5" --arch "20:drop0.1-32:bn:relu:drop0.2-16:elu-4" --opt adam --lr 0.003 --batch 32
        --epochs 2 --progress none --stream-mb 0.01 --ema 0.9 --clip-norm 1)
run train "${common[@]}" --checkpoint-dir "$tmp/a" --checkpoint-every 40 --keep 50 --summary "$tmp/a.json"
run train "${common[@]}" --resume "$tmp/a/ckpt-step00000080.h5" --summary "$tmp/b.json"
# the resumed run ends where the straight one did
a=$(grep -o '"test_loss": [^,]*' "$tmp/a.json") b=$(grep -o '"test_loss": [^,]*' "$tmp/b.json")
[ "$a" = "$b" ] || { echo "FAILED: resume: $a against $b"; exit 1; }
run train --data "$tmp/d.h5" --hidden 16 --epochs 1 --progress none --normalize minmax --output-bias priors \
  --loss hinge --opt momentum --weight-decay 1e-3 --l1 1e-4 --max-norm 2 --no-shuffle
run eval --data "$tmp/d.h5" --checkpoint "$tmp/a/ckpt-step00000080.h5" --split test
run info "$tmp/a/ckpt-step00000080.h5"
run info "$tmp/d.h5"
run bench --hidden 32,16 --inputs 20 --outputs 4 --batch 16 --seconds 0.01 --iters 5
run gradcheck --data "$tmp/d.h5" --arch "20:drop0.1-12:bn:tanh-8:maxout2-4"
run sanity --data "$tmp/d.h5" --hidden 16
# a bad file is refused cleanly (exit 1 or 2, one line, no sanitizer report)
printf 'not hdf5' > "$tmp/bad.h5"
if "$bin" train --data "$tmp/bad.h5" --progress none > "$tmp/out" 2>&1; then echo "FAILED: bad file accepted"; exit 1; fi
if grep -qE "ERROR: AddressSanitizer|runtime error:" "$tmp/out"; then cat "$tmp/out"; exit 1; fi
echo "sanitized program: 11 runs clean"
