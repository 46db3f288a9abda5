#!/usr/bin/env bash
# Preemption (issue 15): SIGTERM, SIGINT, SIGUSR1 and SIGUSR2 on a rank stop
# a 2-rank run cleanly. The ranks agree at the step's exchange, rank 0 writes
# a checkpoint of that step, one line says what happened, the summary says
# "stopped-by-signal", every rank exits with 3, and --resume auto ends
# bit-identical to a run never stopped, with its --metrics history whole.
# Also: the summary's status for every other way a run ends, and a launch
# whose environment disagrees with MPI's world.
# Usage: test_signals.sh NNDIST TMPDIR MPIEXEC NPFLAG
set -uo pipefail
bin=$1 tmp=$2/signals mpiexec=$3 npflag=$4
rm -rf "$tmp" && mkdir -p "$tmp" && cd "$tmp" || exit 1
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
passed=0 failed=0
ok() { echo "ok: $*"; passed=$((passed + 1)); }
bad() { echo "FAIL: $*"; failed=$((failed + 1)); }
# The first value of a key of a one-line JSON file (strings unquoted, up to a comma); k.sub reads sub.
field() { sed -n "s/.*\"${2##*.}\": \"\{0,1\}\([^\",}]*\).*/\1/p" "$1" | head -1; }
checksum() { "$bin" info "$1" | sed -n 's/.*checksums   model \([0-9a-f]*\),.*/\1/p'; }
run2() { "$mpiexec" "$npflag" 2 "$bin" train "$@"; }

"$bin" data synth --out d.h5 --rows 3000 --val-rows 300 --test-rows 300 --features 20 --classes 4 >/dev/null
common=(--data d.h5 --hidden 32 --batch 25 --epochs 3 --opt adam --lr 0.01 --progress none --threads 1)
# 3000 rows over 2 ranks at 25 a rank: 60 steps an epoch, 180 in all.

# The reference: never stopped.
run2 "${common[@]}" --checkpoint-dir ref --metrics ref.jsonl --summary ref.json >ref.log 2>&1 || bad "reference run failed"
ref=$(checksum ref/ckpt-step00000180.h5)
[ -n "$ref" ] || bad "reference checkpoint missing"
[ "$(field ref.json status)" = completed ] && ok "completed run: status completed" || bad "status $(field ref.json status)"
[ -n "$(field ref.json end_time)" ] && [ -n "$(field ref.json hosts)" ] && [ -n "$(field ref.json version)" ] \
  && ok "summary has end_time, hosts, version" || bad "summary lacks end_time/hosts/version"

# Each signal, raised by the last rank inside step 70 (epoch 2, 10 of 60 done).
for sig in term int usr1 usr2; do
  SIG=$(tr a-z A-Z <<< "$sig")
  rm -rf "c-$sig"
  run2 "${common[@]}" --checkpoint-dir "c-$sig" --metrics "m-$sig.jsonl" --summary "s-$sig.json" \
    --fault-signal-step 70 --fault-signal "$sig" >"stop-$sig.log" 2>&1
  rc=$?
  [ $rc -eq 3 ] && ok "SIG$SIG: exit status 3" || bad "SIG$SIG: exit status $rc"
  grep -q "^nndist: stopped by SIG$SIG at step 70 (epoch 2, 17% through); checkpoint c-$sig/ckpt-step00000070.h5; rerun with --resume auto$" \
    "stop-$sig.log" && ok "SIG$SIG: the line" || { bad "SIG$SIG: no stop line"; grep nndist: "stop-$sig.log"; }
  [ -f "c-$sig/ckpt-step00000070.h5" ] && ok "SIG$SIG: checkpoint of step 70" || bad "SIG$SIG: no checkpoint of step 70"
  [ "$(field "s-$sig.json" status)" = stopped-by-signal ] && [ "$(field "s-$sig.json" stop.step)" = 70 ] \
    && ok "SIG$SIG: summary stopped-by-signal at 70" || bad "SIG$SIG: summary $(field "s-$sig.json" status)"
  run2 "${common[@]}" --checkpoint-dir "c-$sig" --metrics "m-$sig.jsonl" --summary "s-$sig.json" --resume auto \
    >"resume-$sig.log" 2>&1 || bad "SIG$SIG: resume failed"
  [ "$(checksum "c-$sig/ckpt-step00000180.h5")" = "$ref" ] && ok "SIG$SIG: resumed run bit-identical" \
    || bad "SIG$SIG: resumed model $(checksum "c-$sig/ckpt-step00000180.h5") != $ref"
  epochs=$(sed 's/^{"epoch": \([0-9]*\),.*/\1/' "m-$sig.jsonl" | tr '\n' ' ')
  [ "$epochs" = "1 2 3 " ] && ok "SIG$SIG: metrics hold epochs 1 2 3 once" || bad "SIG$SIG: metrics epochs: $epochs"
done

# A real signal from outside, to rank 1's process, mid-run: the summary says
# "running" until then; whatever step it lands in, the resume is exact.
run2 "${common[@]}" --epochs 100000 --checkpoint-dir ext --summary ext.json >ext.log 2>&1 &
job=$!
for _ in $(seq 100); do [ -f ext.json ] && break; sleep 0.1; done
[ "$(field ext.json status)" = running ] && ok "summary says running during the run" || bad "no running summary"
sleep 1
pid=$(pgrep -f "^$bin train --data d.h5 .*--checkpoint-dir ext" | sort -n | tail -1)
[ -n "$pid" ] || bad "cannot find a rank's process"
t0=$(date +%s.%N)
kill -TERM "$pid"
wait $job
rc=$? t1=$(date +%s.%N)
[ $rc -eq 3 ] && ok "external SIGTERM: exit 3 after $(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.2f", b-a}') s" \
  || bad "external SIGTERM: exit $rc"
step=$(field ext.json stop.step)
[ -f "ext/ckpt-step$(printf %08d "$step").h5" ] && ok "external SIGTERM: checkpoint of step $step" || bad "no checkpoint of $step"

# A second signal while stopping ends the process at once: rank 0 is frozen
# (SIGSTOP) so rank 1 cannot finish its step; SIGTERM, then SIGINT, to rank 1.
run2 "${common[@]}" --epochs 100000 --summary two.json >two.log 2>&1 &
job=$!
for _ in $(seq 100); do [ -f two.json ] && break; sleep 0.1; done
sleep 0.5
rank_pid() { for p in $(pgrep -f "^$bin train --data d.h5 .*--summary two.json"); do
  tr '\0' '\n' < /proc/$p/environ | grep -qx "OMPI_COMM_WORLD_RANK=$1" && echo "$p"; done; }
r0=$(rank_pid 0) r1=$(rank_pid 1)
[ -n "$r0" ] && [ -n "$r1" ] || bad "cannot find the two ranks' processes"
kill -STOP "$r0"; sleep 0.3
kill -TERM "$r1"; sleep 0.3
kill -INT "$r1"
for _ in $(seq 50); do kill -0 "$r1" 2>/dev/null || break; sleep 0.1; done
kill -0 "$r1" 2>/dev/null && bad "rank 1 still alive after a second signal" || ok "a second signal ends the rank at once"
kill -CONT "$r0" 2>/dev/null
wait $job
grep -q "^nndist: rank 1: a second signal while stopping: exiting now" two.log && ok "... with its line" \
  || bad "no second-signal line: $(grep nndist: two.log)"

# The checkpoint directory's lock: a second run into it is refused while the
# first lives; a lock left by a dead process or by this Slurm job's earlier
# run is taken over; a finished run leaves no lock.
run2 "${common[@]}" --epochs 100000 --checkpoint-dir lk --summary lk.json >lk.log 2>&1 &
job=$!
for _ in $(seq 100); do [ -f lk.json ] && break; sleep 0.1; done
run2 "${common[@]}" --checkpoint-dir lk >lk2.log 2>&1
rc=$?
[ $rc -eq 2 ] && grep -q "^nndist: error: --checkpoint-dir lk is in use by another run (host $(hostname), pid [0-9]*)" lk2.log \
  && ok "a second run into a live run's directory: refused" || bad "second run: rc $rc: $(grep nndist: lk2.log)"
pkill -USR1 -f "^$bin train --data d.h5 .*--checkpoint-dir lk "
wait $job
[ ! -e lk/.nndist.lock ] && ok "a stopped run leaves no lock" || bad "lock left behind"
echo "$(hostname) 999999 - 0" > lk/.nndist.lock
run2 "${common[@]}" --epochs 1 --checkpoint-dir lk >lk3.log 2>&1 && [ ! -e lk/.nndist.lock ] \
  && ok "a dead process's lock: taken over" || bad "stale lock: $(grep nndist: lk3.log)"
echo "elsewhere 1 4242 0" > lk/.nndist.lock
SLURM_JOB_ID=4242 SLURM_RESTART_COUNT=1 run2 "${common[@]}" --epochs 1 --checkpoint-dir lk >lk4.log 2>&1 \
  && ok "an earlier run of this Slurm job (a requeue): taken over" || bad "requeue lock: $(grep nndist: lk4.log)"
for holder in "elsewhere 1 4242 0" "garbage"; do
  echo "$holder" > lk/.nndist.lock
  SLURM_JOB_ID=4242 run2 "${common[@]}" --epochs 1 --checkpoint-dir lk >lk5.log 2>&1
  [ $? -eq 2 ] && ok "lock '$holder' (another live run of this job, or unreadable): refused" \
    || bad "lock '$holder' accepted"
done
rm -f lk/.nndist.lock

# Async, each signal: the worker's signal reaches server 0, which
# checkpoints; every rank exits 3; a resume completes.
for sig in term int usr1 usr2; do
  SIG=$(tr a-z A-Z <<< "$sig")
  rm -rf "as-$sig"
  run2 --mode async "${common[@]}" --checkpoint-dir "as-$sig" --summary "as-$sig.json" --fault-signal-step 50 \
    --fault-signal "$sig" >"as-$sig.log" 2>&1
  rc=$?
  [ $rc -eq 3 ] && ok "async SIG$SIG on the worker: exit 3" || bad "async SIG$SIG: exit $rc"
  grep -q "^nndist: stopped by SIG$SIG at update 50 (epoch 1, 42% through); checkpoint as-$sig/ckpt-step00000050.h5; rerun" \
    "as-$sig.log" && ok "async SIG$SIG: the line" || { bad "async SIG$SIG: no stop line"; grep nndist: "as-$sig.log"; }
  [ "$(field "as-$sig.json" status)" = stopped-by-signal ] && ok "async SIG$SIG: summary" || bad "async SIG$SIG summary"
done
run2 --mode async "${common[@]}" --checkpoint-dir as-usr1 --summary as.json --resume auto >as2.log 2>&1 \
  && [ "$(field as.json status)" = completed ] && ok "async: resume completes" || bad "async resume"
# An external SIGUSR2 to the server (rank 0).
run2 --mode async "${common[@]}" --epochs 100000 --checkpoint-dir as-ext --summary as-ext.json >as-ext.log 2>&1 &
job=$!
for _ in $(seq 100); do [ -f as-ext.json ] && break; sleep 0.1; done
sleep 0.5
for p in $(pgrep -f "^$bin train --mode async .*--checkpoint-dir as-ext"); do
  tr '\0' '\n' < /proc/$p/environ | grep -qx OMPI_COMM_WORLD_RANK=0 && kill -USR2 "$p"; done
wait $job
rc=$?
[ $rc -eq 3 ] && grep -q "^nndist: stopped by SIGUSR2 at update" as-ext.log && ok "async: SIGUSR2 to the server" \
  || bad "async server signal: rc $rc $(grep nndist: as-ext.log)"

# A failure during training (the checkpoint directory replaced by a file
# under the run): the summary says failed, with the reason.
run2 "${common[@]}" --epochs 100000 --checkpoint-dir gone --checkpoint-every 20 --summary fail.json >fail.log 2>&1 &
job=$!
for _ in $(seq 100); do [ -f fail.json ] && break; sleep 0.1; done
sleep 0.5
mv gone gone.old && echo "not a directory" > gone # a rename: no race with the files being written
wait $job
rc=$?
[ $rc -ne 0 ] && [ $rc -ne 3 ] && [ "$(field fail.json status)" = failed ] && grep -q '"reason": "[^"]*\bgone\b' fail.json \
  && ok "a failed run: status failed with the reason" || bad "failed run: rc $rc, $(field fail.json status): $(grep -o '"reason": "[^"]*"' fail.json)"
rm -rf gone gone.old

# The other ends: early stop, the numerical guard.
run2 "${common[@]}" --epochs 30 --early-stop 1 --summary es.json >es.log 2>&1
[ "$(field es.json status)" = early-stopped ] && ok "early stop: status early-stopped" \
  || bad "early stop: status $(field es.json status)"
run2 "${common[@]}" --fault-nan-step 5 --summary nan.json >nan.log 2>&1
[ "$(field nan.json status)" = stopped-on-nan ] && grep -q "step 5" <<< "$(field nan.json reason)" \
  && ok "NaN: status stopped-on-nan with the reason" || bad "NaN: status $(field nan.json status)"
# An output path that cannot be written is refused before training.
if run2 "${common[@]}" --summary nodir/s.json >nd.log 2>&1; then bad "--summary nodir/ accepted"; fi
grep -q "^nndist: error: --summary: nodir/s.json" nd.log && ! grep -q "^epoch" nd.log \
  && ok "--summary nodir/s.json refused at setup" || { bad "--summary nodir: $(grep nndist: nd.log)"; }

# A crash while no file is open (here a SIGSEGV from outside, mid-training)
# ends with one line that does not blame the data file.
"$bin" train "${common[@]}" --epochs 100000 --summary segv.json >segv.log 2>&1 &
job=$!
for _ in $(seq 100); do [ -f segv.json ] && break; sleep 0.1; done
kill -SEGV $job
wait $job
rc=$?
grep -q "^nndist: error: rank 0: segmentation fault (SIGSEGV)$" segv.log && [ $rc -eq 70 ] \
  && ok "a crash outside a file read: exit 70, the file not blamed" || bad "crash: rc $rc: $(grep nndist: segv.log)"

# Launch mistakes: the environment says 2 tasks, MPI says a world of 1 (as
# in an srun step without MPI support); a batch shell (no SLURM_STEP_ID) is
# no such step.
for var in SLURM_STEP_NUM_TASKS OMPI_COMM_WORLD_SIZE; do
  out=$(env -u OMPI_COMM_WORLD_SIZE "$var=2" SLURM_STEP_ID=0 "$bin" train "${common[@]}" 2>&1)
  rc=$?
  [ $rc -eq 2 ] && grep -q "^nndist: error: $var=2 but MPI gives this process a world of 1 rank.*mpirun -np 2" <<< "$out" \
    && ok "$var=2 on one rank: refused" || bad "$var=2: rc $rc: $out"
done

env -u OMPI_COMM_WORLD_SIZE SLURM_STEP_NUM_TASKS=2 "$bin" train "${common[@]}" --epochs 1 >batch.log 2>&1 \
  && ok "SLURM_STEP_NUM_TASKS=2 without SLURM_STEP_ID (a batch shell): runs" || bad "batch shell refused: $(grep nndist: batch.log)"

echo "$passed passed, $failed failed"
[ $failed -eq 0 ]
