#!/usr/bin/env bash
# The SimGrid build against the real program (docs/simulation.md): 8
# simulated ranks (SMPI, every step computed) and 8 real ones (mpiexec,
# oversubscribed) train the same small model on the same synthetic data
# with --deterministic, whose fixed-point exchange makes the result
# independent of how the sums arrive: the saved weights must be bit for
# bit the same, and the simulated run reports a step time (simulated).
# Skipped (77) without smpirun or the SimGrid build (launch/test builds it).
# Usage: test_simgrid.sh NNDIST NNDIST_SIMGRID TMPDIR
set -uo pipefail
bin=$1 sim=$2 tmp=$3/simgrid
command -v smpirun > /dev/null || { echo "SKIPPED: smpirun is missing (Debian: launch/install-deps libsimgrid-dev)"; exit 77; }
[ -x "$sim" ] || { echo "SKIPPED: no SimGrid build at $sim (cmake -DNNDIST_SIMGRID=ON; launch/test builds it)"; exit 77; }
command -v h5dump > /dev/null || { echo "SKIPPED: h5dump is missing (hdf5-tools)"; exit 77; }
source "$(dirname "${BASH_SOURCE[0]}")/checks.sh"
rm -rf "$tmp" && mkdir -p "$tmp" && cd "$tmp" || exit 1
cat > platform.xml << 'EOF'
<?xml version='1.0'?>
<!DOCTYPE platform SYSTEM "https://simgrid.org/simgrid.dtd">
<platform version="4.1">
  <cluster id="c" prefix="h" suffix="" radical="0-7" speed="1Gf" bw="10Gbps" lat="2us" bb_bw="80Gbps" bb_lat="0s"/>
</platform>
EOF
for i in 0 1 2 3 4 5 6 7; do echo "h$i"; done > hosts.txt
"$bin" data synth --out d.h5 --rows 1024 --test-rows 256 --features 24 --classes 4 --separation 1 > /dev/null \
  || { bad "data synth failed"; checks_done; exit; }
train=(train --data d.h5 --hidden 16 --batch 16 --epochs 1 --lr 0.05 --deterministic --threads 1 --timeout 0
       --progress none --train-eval-rows 0)
mpiexec -n 8 --oversubscribe "$bin" "${train[@]}" --save real.h5 --summary real.json > real.log 2>&1 \
  || bad "the real run failed: $(grep 'nndist:' real.log | head -1)"
smpirun -np 8 -platform platform.xml -hostfile hosts.txt --cfg=smpi/host-speed:1Gf --log=root.thres:warning \
  "$sim" "${train[@]}" --save sim.h5 --summary sim.json > sim.log 2>&1 \
  || bad "the simulated run failed: $(grep -v '^\[' sim.log | tail -2 | tr '\n' ' ')"
[ "$(num sim.json np)" = 8 ] && [ "$(num sim.json steps)" = 8 ] \
  && ok "the simulated run took its 8 steps on 8 ranks" || bad "simulated summary: np $(num sim.json np), steps $(num sim.json steps)"
weights() { h5dump -m '%.9g' -g /model "$1" 2> /dev/null | sed 1d; }
if [ -s real.h5 ] && [ -s sim.h5 ] && [ -n "$(weights real.h5)" ] && [ "$(weights real.h5)" = "$(weights sim.h5)" ]; then
  ok "the saved weights are bit for bit the same ($(weights real.h5 | grep -c '(') lines of values)"
else
  bad "the weights differ: $(diff <(weights real.h5) <(weights sim.h5) | head -4 | tr '\n' ' ')"
fi
for k in test_accuracy test_loss; do
  [ -n "$(num real.json $k)" ] && [ "$(num real.json $k)" = "$(num sim.json $k)" ] \
    && ok "$k the same: $(num sim.json $k)" || bad "$k: real $(num real.json $k), simulated $(num sim.json $k)"
done
secs=$(num sim.json train_seconds)
awk -v s="$secs" 'BEGIN { exit !(s > 0) }' \
  && ok "the simulated run reports its time: $(awk -v s="$secs" 'BEGIN { printf "%.3f ms", 1000 * s / 8 }') per step (simulated)" \
  || bad "simulated train_seconds: '$secs'"
# --sim-sample: 2 forward-backward passes over all ranks computed, the
# other 6 x 8 replayed; the normal build refuses it.
smpirun -np 8 -platform platform.xml -hostfile hosts.txt --cfg=smpi/host-speed:1Gf --log=root.thres:warning \
  "$sim" "${train[@]}" --sim-sample 2 --save none --summary sampled.json > sampled.log 2>&1 \
  && [ "$(num sampled.json steps)" = 8 ] && ok "--sim-sample 2: the 8 steps ran, replayed" \
  || bad "--sim-sample 2: $(grep -v '^\[' sampled.log | tail -2 | tr '\n' ' ')"
refused "--sim-sample in a normal build" "SimGrid build" --data d.h5 --sim-sample 2
# --sim-step-ms / --sim-update-ms with SMPI's own timing off: each step
# costs exactly the stated time plus the simulated exchange (32 steps on 2
# ranks; a few hundred floats on a 10 Gbps link: microseconds). With
# --sim-step-cv each rank's step varies around the stated mean, so a sync
# step, which waits for the slower rank, is longer; the same seed gives
# the same times.
stated=(train --data d.h5 --hidden 16 --batch 16 --epochs 1 --threads 1 --timeout 0 --progress none
        --train-eval-rows 0 --save none --sim-step-ms 4 --sim-update-ms 1)
stated_run() { # NAME [options]
  local name=$1
  shift
  smpirun -np 2 -platform platform.xml -hostfile hosts.txt --cfg=smpi/host-speed:1Gf --log=root.thres:warning \
    --cfg=smpi/simulate-computation:no "$sim" "${stated[@]}" "$@" --summary "$name.json" > "$name.log" 2>&1 \
    || bad "$name: $(grep -v '^\[' "$name.log" | tail -2 | tr '\n' ' ')"
}
per_step_ms() { awk -v s="$(num "$1" "$2")" -v n="$(num "$1" steps)" 'BEGIN { if (n > 0) printf "%.4f", 1000 * s / n }'; }
stated_run stated
[ "$(num stated.json steps)" = 32 ] && [ "$(per_step_ms stated.json backward)" = 4.0000 ] \
  && [ "$(per_step_ms stated.json update)" = 1.0000 ] && ok "--sim-step-ms 4 --sim-update-ms 1: 4 and 1 ms per step" \
  || bad "stated: $(num stated.json steps) steps, $(per_step_ms stated.json backward) and $(per_step_ms stated.json update) ms"
step=$(per_step_ms stated.json train_seconds)
awk -v s="$step" 'BEGIN { exit !(s >= 5.0 && s < 5.05) }' && ok "a stated step takes $step ms (5 ms + the exchange)" \
  || bad "a stated step takes $step ms, not 5 + microseconds"
stated_run varied --sim-step-cv 0.3
stated_run varied2 --sim-step-cv 0.3
own=$(per_step_ms varied.json backward) step=$(per_step_ms varied.json train_seconds)
awk -v o="$own" -v s="$step" 'BEGIN { exit !(o > 3.5 && o < 4.5 && s > 5.2) }' \
  && ok "--sim-step-cv 0.3: rank 0's own step $own ms (mean 4), a sync step $step ms (waits for the slower)" \
  || bad "--sim-step-cv 0.3: rank 0's own step $own ms, a sync step $step ms"
[ -n "$step" ] && [ "$(num varied.json train_seconds)" = "$(num varied2.json train_seconds)" ] \
  && ok "--sim-step-cv: the same seed, the same times" \
  || bad "--sim-step-cv: $(num varied.json train_seconds) then $(num varied2.json train_seconds) s"
refused "--sim-step-ms in a normal build" "SimGrid build" --data d.h5 --sim-step-ms 4
refused "--sim-step-cv without --sim-step-ms" "only with --sim-step-ms" --data d.h5 --sim-step-cv 0.2
checks_done
