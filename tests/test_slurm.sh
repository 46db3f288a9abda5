#!/usr/bin/env bash
# The Slurm templates (launch/slurm/) without Slurm: fake sbatch, srun and
# scontrol on the PATH. The fake sbatch reads a script's #SBATCH lines, sets
# the SLURM_* variables a real allocation would, runs a copy of the script
# from a spool directory (as slurmd does, so the script must find launch/
# from where it was submitted), once per array task, and runs it again after
# `scontrol requeue` with SLURM_RESTART_COUNT raised. The fake srun records
# its command line and either exits with the next status of a list or runs
# the program for real (its --ntasks ranks under mpirun). Fakes of mpirun,
# apt-get, sudo and dpkg-query record any call: the templates must launch
# through srun and install nothing.
# Usage: test_slurm.sh NNDIST TMPDIR
set -euo pipefail
bin=$1 tmp=$2/slurm
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
rm -rf "$tmp" && mkdir -p "$tmp/bin" "$tmp/state" "$tmp/work"
real_mpirun=$(command -v mpirun)
# Nothing from an outer Slurm job or the caller's settings of the templates.
for v in $(compgen -e | grep '^SLURM_') MODE DATA SERVERS RUN_DIR CHECKPOINT_EVERY MAX_REQUEUES NNDIST_STOPPED_STATUS \
  NNDIST_LAUNCHER NNDIST_SRUN_MPI NNDIST_LAUNCH NNDIST_LAUNCH_DIR NNDIST_RUNS NNDIST_DATA NNDIST_BUILD OUT NPS EPOCHS \
  TRIALS; do
  unset "$v"
done
log=$tmp/calls.log
export FAKE_LOG=$log FAKE_STATE=$tmp/state FAKE_REAL_MPIRUN=$real_mpirun NNDIST_BIN=$bin
if [ "$(id -u)" -eq 0 ]; then export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi

cat > "$tmp/bin/srun" << 'EOF'
#!/usr/bin/env bash
# Fake srun: records its command line; FAKE_SRUN_EXEC=1 runs the program
# (--ntasks ranks under the real mpirun), else it exits with the first
# status left in $FAKE_STATE/statuses (0 when none), after FAKE_SRUN_SLEEP
# seconds if set (SIGUSR1 then ends it with status 3, as the trainer would).
{ printf 'srun'; printf ' %s' "$@"; echo; } >> "$FAKE_LOG"
n=1
while [ $# -gt 0 ]; do
  case $1 in
    --ntasks=*) n=${1#*=}; shift ;;
    -n) n=$2; shift 2 ;;
    -*) shift ;;
    *) break ;;
  esac
done
if [ -n "${FAKE_SRUN_FAIL_MATCH:-}" ] && [[ " $* " == *" $FAKE_SRUN_FAIL_MATCH "* ]]; then
  echo "nndist: error: rank 1: fake failure for the test"
  printf '%s\n' "--------------------------------------------------------------------------" \
    "prterun detected that one or more processes exited with non-zero status," "thus causing the job to be terminated." \
    "--------------------------------------------------------------------------"
  exit 1
fi
if [ "${FAKE_SRUN_EXEC:-}" = 1 ]; then
  if [ "$n" -gt 1 ]; then exec "$FAKE_REAL_MPIRUN" -np "$n" --oversubscribe "$@"; else exec "$@"; fi
fi
if [ -n "${FAKE_SRUN_SLEEP:-}" ]; then
  trap 'echo "srun got USR1" >> "$FAKE_LOG"; kill "$sleeper" 2> /dev/null; exit 3' USR1
  sleep "$FAKE_SRUN_SLEEP" &
  sleeper=$!
  wait "$sleeper" || true
fi
status=0
if [ -s "$FAKE_STATE/statuses" ]; then
  read -r status rest < "$FAKE_STATE/statuses"
  echo "${rest:-}" > "$FAKE_STATE/statuses"
fi
[ "$status" = 0 ] || [ "$status" = 3 ] || echo "nndist: error: fake status $status"
exit "$status"
EOF

cat > "$tmp/bin/scontrol" << 'EOF'
#!/usr/bin/env bash
echo "scontrol $*" >> "$FAKE_LOG"
case $1 in
  requeue) [ -z "${FAKE_REQUEUE_FAILS:-}" ] || exit 1; touch "$FAKE_STATE/requeued" ;;
  show) [ "$2" = hostnames ] && printf 'node%s\n' 1 2 3 4 ;;
esac
EOF

cat > "$tmp/bin/sbatch" << 'EOF'
#!/usr/bin/env bash
# Fake sbatch: runs the job now, in the foreground; its status is the last
# attempt's (of the last array task).
set -uo pipefail
declare -A opt=([nodes]=1 [ntasks-per-node]="" [ntasks]="" [cpus-per-task]="" [array]="" [output]="slurm-%j.out"
                [open-mode]=truncate)
setopt() { local k=${1#--}; opt[${k%%=*}]=${k#*=}; }
cli=()
while [ $# -gt 0 ] && [[ $1 == --* ]]; do cli+=("$1"); shift; done
script=$1; shift
while read -r line; do
  [[ $line == '#!'* ]] && continue
  [[ $line == '#SBATCH '* ]] && { setopt "${line#'#SBATCH '}"; continue; }
  [[ $line == '#'* ]] || break
done < "$script"
for o in "${cli[@]}"; do setopt "$o"; done
id=$(($(cat "$FAKE_STATE/jobid" 2> /dev/null || echo 0) + 1))
echo "$id" > "$FAKE_STATE/jobid"
echo "Submitted batch job $id"
tasks=("")
if [ -n "${opt[array]}" ]; then
  lo=${opt[array]%-*} hi=${opt[array]#*-}
  tasks=($(seq "$lo" "$hi"))
fi
spool=$FAKE_STATE/spool/job$id
mkdir -p "$spool"
cp "$script" "$spool/slurm_script"
status=0
for t in "${tasks[@]}"; do
  (
    export SLURM_SUBMIT_DIR=$PWD SLURM_JOB_NUM_NODES=${opt[nodes]}
    if [ -n "${opt[ntasks-per-node]}" ]; then
      export SLURM_NTASKS_PER_NODE=${opt[ntasks-per-node]} SLURM_NTASKS=$((opt[nodes] * opt[ntasks-per-node]))
    else
      export SLURM_NTASKS=${opt[ntasks]:-1}
    fi
    [ -z "${opt[cpus-per-task]}" ] || export SLURM_CPUS_PER_TASK=${opt[cpus-per-task]}
    out=${opt[output]}
    if [ -n "$t" ]; then
      export SLURM_ARRAY_JOB_ID=$id SLURM_ARRAY_TASK_ID=$t SLURM_ARRAY_TASK_MIN=$lo SLURM_ARRAY_TASK_MAX=$hi \
        SLURM_ARRAY_TASK_COUNT=$((hi - lo + 1)) SLURM_JOB_ID=$id$t
      out=${out//%A/$id}
      out=${out//%a/$t}
    else
      export SLURM_JOB_ID=$id
    fi
    out=${out//%j/$SLURM_JOB_ID}
    unset SLURM_RESTART_COUNT
    for attempt in 0 1 2 3 4 5; do
      [ "$attempt" -eq 0 ] || export SLURM_RESTART_COUNT=$attempt
      [ "$attempt" -gt 0 ] && [ "${opt[open-mode]}" = append ] || : > "$out"
      rm -f "$FAKE_STATE/requeued"
      bash "$spool/slurm_script" "$@" >> "$out" 2>&1 < /dev/null
      status=$?
      echo "job $SLURM_JOB_ID attempt $attempt status $status" >> "$FAKE_LOG"
      [ -f "$FAKE_STATE/requeued" ] || break
    done
    exit "$status"
  )
  status=$?
done
exit "$status"
EOF

for tool in mpirun apt-get sudo dpkg-query; do
  printf '#!/bin/sh\necho "FORBIDDEN %s $*" >> "$FAKE_LOG"\nexit 1\n' "$tool" > "$tmp/bin/$tool"
done
chmod +x "$tmp/bin"/*
export PATH=$tmp/bin:$PATH
# The jobs are submitted from a directory holding launch/, as the README says.
ln -s "$root/launch" "$tmp/work/launch"
cd "$tmp/work"

failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }
statuses() { echo "$*" > "$tmp/state/statuses"; }
reset() { : > "$log"; rm -rf runs ./*.out "$tmp/state/jobid"; }
srun_lines() { grep '^srun ' "$log" || true; }
has() { grep -q -- "$1" <<< "$2" || fail "$3: expected '$1' in: $2"; }

# --- train.sbatch: stopped once (status 3), requeued, resumed, finished.
reset
statuses 3 0
sbatch launch/slurm/train.sbatch --epochs 2 > /dev/null && rc=0 || rc=$?
[ "$rc" -eq 0 ] || fail "train: stopped then finished: job status $rc"
[ "$(srun_lines | wc -l)" -eq 2 ] || fail "train: expected 2 srun calls (an attempt and its requeue), got: $(srun_lines)"
[ "$(grep -c '^scontrol requeue 1$' "$log")" -eq 1 ] || fail "train: expected one 'scontrol requeue 1': $(cat "$log")"
first=$(srun_lines | head -n 1) second=$(srun_lines | tail -n 1)
for line in "$first" "$second"; do
  for want in "--mpi=pmix" "--ntasks=4" "--cpus-per-task=8" "$bin train" "--threads 8" \
    "--checkpoint-dir runs/slurm-1/ckpt" "--resume auto" "--metrics runs/slurm-1/metrics.jsonl" \
    "--summary runs/slurm-1/summary.json" "--epochs 2\$"; do
    has "$want" "$line" "train"
  done
done
[ "$first" = "$second" ] || fail "train: the requeued job must run the same command: $first / $second"
[ -d runs/slurm-1/ckpt ] || fail "train: runs/slurm-1/ckpt was not created"
grep -q "attempt 0" nndist-1.out && grep -q "attempt 1" nndist-1.out ||
  fail "train: nndist-1.out does not hold both attempts (--open-mode=append): $(cat nndist-1.out)"
grep -q "FORBIDDEN" "$log" && fail "train: called $(grep FORBIDDEN "$log")"

# --- Finished at once: no requeue.
reset
statuses 0
sbatch launch/slurm/train.sbatch > /dev/null && rc=0 || rc=$?
[ "$rc" -eq 0 ] || fail "train: success: job status $rc"
grep -q '^scontrol' "$log" && fail "train: success was requeued: $(cat "$log")"

# --- A real failure: its status, no requeue, the reason said.
reset
statuses 1
sbatch launch/slurm/train.sbatch > /dev/null && rc=0 || rc=$?
[ "$rc" -eq 1 ] || fail "train: a failure must end the job with its status 1, got $rc"
grep -q '^scontrol' "$log" && fail "train: a failure was requeued: $(cat "$log")"
grep -q "not requeued" nndist-1.out || fail "train: the failure is not reported: $(cat nndist-1.out)"

# --- MAX_REQUEUES bounds the requeues; the stopped status is a variable.
reset
statuses 5 5 5
MAX_REQUEUES=1 NNDIST_STOPPED_STATUS=5 sbatch launch/slurm/train.sbatch > /dev/null && rc=0 || rc=$?
[ "$(grep -c '^scontrol requeue' "$log")" -eq 1 ] || fail "train: MAX_REQUEUES=1 must requeue once: $(cat "$log")"
[ "$rc" -eq 5 ] || fail "train: stopped past MAX_REQUEUES: status $rc, expected 5"
grep -q "MAX_REQUEUES" nndist-1.out || fail "train: past MAX_REQUEUES not reported: $(cat nndist-1.out)"

# --- scontrol requeue refused: the job says how to go on.
reset
statuses 3
FAKE_REQUEUE_FAILS=1 sbatch launch/slurm/train.sbatch > /dev/null && rc=0 || rc=$?
[ "$rc" -eq 3 ] || fail "train: a refused requeue must end with status 3, got $rc"
grep -q "RUN_DIR=runs/slurm-1 sbatch" nndist-1.out || fail "train: no resubmit hint: $(cat nndist-1.out)"

# --- The B: form: SIGUSR1 to the batch shell reaches the launcher.
reset
rm -f "$tmp/state/statuses"
SLURM_JOB_ID=77 SLURM_NTASKS=2 SLURM_CPUS_PER_TASK=1 SLURM_SUBMIT_DIR=$PWD FAKE_SRUN_SLEEP=20 \
  bash launch/slurm/train.sbatch > shell.out 2>&1 &
shell=$!
for _ in $(seq 100); do grep -q '^srun' "$log" && break; sleep 0.1; done
sleep 0.3
kill -USR1 "$shell"
wait "$shell" && rc=0 || rc=$?
grep -q "srun got USR1" "$log" || fail "B: form: the launcher did not get SIGUSR1: $(cat "$log") $(cat shell.out)"
grep -q '^scontrol requeue 77$' "$log" || fail "B: form: not requeued: $(cat "$log")"
[ "$rc" -eq 0 ] || fail "B: form: status $rc after the requeue"

# --- Outside Slurm: one line, status 2.
out=$(env -u SLURM_JOB_ID bash launch/slurm/train.sbatch 2>&1) && rc=0 || rc=$?
[ "$rc" -eq 2 ] && grep -q "not in a Slurm job" <<< "$out" || fail "train outside Slurm: $rc $out"

# --- hpsearch.sbatch: a job array of 3 trials, run for real (2 ranks each),
# gathered; each trial is the draw a local search makes.
reset
"$bin" data synth --out "$tmp/d.h5" --rows 600 --val-rows 200 --test-rows 0 --features 8 --classes 3 > /dev/null
FAKE_SRUN_EXEC=1 sbatch --array=1-3 launch/slurm/hpsearch.sbatch --data "$tmp/d.h5" --epochs 1 \
  --arch "8-16:relu:drop{drop}-3" > /dev/null && rc=0 || rc=$?
[ "$rc" -eq 0 ] || fail "hpsearch array: status $rc: $(cat nndist-hpsearch-1_*.out)"
[ "$(srun_lines | wc -l)" -eq 3 ] || fail "hpsearch array: expected 3 srun calls: $(srun_lines)"
for want in "--mpi=pmix" "--ntasks=2" "--cpus-per-task=4" "--threads 4"; do has "$want" "$(srun_lines | head -n 1)" "hpsearch"; done
for i in 1 2 3; do [ -s runs/hpsearch-1/trial-$i.rec ] || fail "hpsearch array: no runs/hpsearch-1/trial-$i.rec"; done
gathered=$(launch/hpsearch --gather --out runs/hpsearch-1) || fail "hpsearch --gather failed: $gathered"
has "3 trials (3 runs) in runs/hpsearch-1, 0 failed" "$gathered" "gather"
has "next round: --round 2 --lr [0-9.e-]*:[0-9.e-]* --wd [0-9.e-]*:[0-9.e-]* --drop" "$gathered" "gather"
NNDIST_LAUNCH="$real_mpirun -np 1" launch/hpsearch --data "$tmp/d.h5" --trials 3 --rounds 1 --epochs 1 --np 1 \
  --arch "8-16:relu:drop{drop}-3" --out "$tmp/local" -- --threads 1 > "$tmp/local.log" 2>&1 || fail "local hpsearch failed: $(cat "$tmp/local.log")"
draws_local=$(tail -n +2 "$tmp/local/trials.csv" | cut -d, -f3,5-7 | sort)
draws_array=$(tail -n +2 runs/hpsearch-1/trials.csv | cut -d, -f3,5-7 | sort)
[ "$(wc -l <<< "$draws_local")" -eq 3 ] || fail "hpsearch: the local search's CSV: $draws_local"
[ "$draws_local" = "$draws_array" ] || fail "hpsearch: the array's draws differ from a local search's: $draws_array / $draws_local"
grep -q "FORBIDDEN" "$log" && fail "hpsearch: called $(grep FORBIDDEN "$log")"

# --- scaling.sbatch: the study as srun steps in one allocation (4 nodes x
# 4 tasks), for real on a small set; an async run fails and its own error
# line is shown; files in the output directory it did not write survive.
reset
mkdir -p runs/scaling-1
echo keep > runs/scaling-1/notes.json
echo keep > runs/scaling-1/other.jsonl
cp "$tmp/local/trial-1.json" runs/scaling-1/ssp-np8.json # an earlier study's run
: > runs/scaling-1/ssp-np8.jsonl
NPS=2 EPOCHS=1 FAKE_SRUN_EXEC=1 FAKE_SRUN_FAIL_MATCH="--mode async" sbatch launch/slurm/scaling.sbatch \
  --data "$tmp/d.h5" --modes "sync async" --hidden 16 > /dev/null && rc=0 || rc=$?
out=$(cat nndist-scaling-1.out)
[ "$rc" -eq 0 ] || fail "scaling: status $rc: $out"
[ "$(srun_lines | wc -l)" -eq 3 ] || fail "scaling: expected 3 srun steps (sync 1, sync 2, async 2): $(srun_lines)"
has "--mpi=pmix --ntasks=1 --cpus-per-task=1 --nodes=1 $bin train" "$(srun_lines | sed -n 1p)" "scaling"
has "--ntasks=2 --cpus-per-task=1 --nodes=1 $bin train" "$(srun_lines | sed -n 2p)" "scaling"
has "scaling: async on 2 ranks failed" "$out" "scaling"
has "  nndist: error: rank 1: fake failure for the test" "$out" "scaling: the run's own error line"
grep -q "thus causing the job" <<< "$out" && fail "scaling: shows the launcher's banner instead of the error line: $out"
for f in notes.json other.jsonl ssp-np8.json; do [ -f "runs/scaling-1/$f" ] || fail "scaling deleted $f"; done
[ -f runs/scaling-1/scaling.csv ] || fail "scaling: no scaling.csv: $out"
rows=$(tail -n +2 runs/scaling-1/scaling.csv | cut -d, -f1,2 | tr '\n' ' ')
[ "$rows" = "sync,1 sync,2 " ] || fail "scaling.csv rows '$rows', expected the two sync runs only"
grep -q "FORBIDDEN" "$log" && fail "scaling: called $(grep FORBIDDEN "$log")"

# --- scaling --launcher srun refuses a run larger than the allocation.
reset
mkdir -p runs/small
SLURM_JOB_ID=9 SLURM_NTASKS=2 FAKE_SRUN_EXEC=1 launch/scaling --launcher srun --nps "2 4" --modes sync --epochs 1 \
  --data "$tmp/d.h5" --hidden 16 --out runs/small > small.out 2>&1 || fail "scaling, small allocation: $(cat small.out)"
grep -q "sync on 4 ranks skipped: the allocation has 2 tasks" small.out || fail "scaling: np 4 > 2 tasks: $(cat small.out)"

[ "$failures" -eq 0 ] || { echo "$failures failed"; exit 1; }
echo "launch/slurm templates: requeue flow, signal forwarding, job array, scaling steps: all passed"
