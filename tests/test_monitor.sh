#!/usr/bin/env bash
# Monitoring (issue 16): --log-every's step lines in the metrics file (and
# kept once across a resume), the gradient norm before clipping and the
# clip rate, per-layer histograms, saturation and gradient norms, and the
# same health figures from server 0 of an async run; plot-metrics draws
# them when matplotlib is there. Usage: test_monitor.sh NNDIST TMPDIR MPIEXEC NPFLAG
set -uo pipefail
bin=$1 tmp=$2/monitor mpiexec=$3 npflag=$4
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
rm -rf "$tmp" && mkdir -p "$tmp" && cd "$tmp" || exit 1
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
py=/usr/bin/python3
[ -x $py ] || py=python3
passed=0 failed=0
ok() { echo "ok: $*"; passed=$((passed + 1)); }
bad() { echo "FAIL: $*"; failed=$((failed + 1)); }
run2() { "$mpiexec" --oversubscribe "$npflag" 2 "$bin" train "$@"; }
# Checks one metrics file with a python (stdlib) snippet; prints its verdict lines.
check() { # file python-body
  $py - "$1" <<EOF
import json, math, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
steps = [r for r in rows if r.get("kind") == "step"]
epochs = [r for r in rows if r.get("kind") == "epoch"]
def say(good, what): print(("ok: " if good else "FAIL: ") + what)
$2
EOF
}
tally() { # the ok/FAIL lines of a check, counted
  while IFS= read -r line; do
    case $line in ok:*) ok "${line#ok: }" ;; FAIL:*) bad "${line#FAIL: }" ;; *) echo "$line" ;; esac
  done
}

"$bin" data synth --out d.h5 --rows 640 --test-rows 64 --features 16 --image 1x4x4 --classes 4 --separation 0.7 \
  >/dev/null || exit 1
# 2 ranks x 16 rows: 20 steps an epoch, 40 in all; tanh saturates, the clip fires.
common=(--data d.h5 --hidden 12,8 --act tanh --epochs 2 --batch 16 --lr 0.05 --progress none --threads 1
  --clip-norm 0.1 --log-every 5)
run2 "${common[@]}" --metrics m.jsonl --checkpoint-dir ck --checkpoint-every 14 --keep 10 >sync.log 2>&1 \
  || bad "sync run failed: $(tail -1 sync.log)"
tally < <(check m.jsonl '
say([r["step"] for r in steps] == list(range(5, 41, 5)), "8 step lines, every 5th of 40 steps: %s" % [r["step"] for r in steps])
say(len(epochs) == 2 and all(rows.index(e) > rows.index(s) for e in epochs for s in steps if s["epoch"] == e["epoch"]),
    "the epoch lines come after their step lines")
say(all(math.isfinite(r["loss"]) and r["loss"] > 0 and r["lr"] > 0 for r in steps), "each step line has its loss and rate")
say(all(r["grad_norm"] > 0 for r in steps) and any(r["grad_norm"] > 0.1 for r in steps),
    "the step lines norm is before the 0.1 clip: %s" % [round(r["grad_norm"], 3) for r in steps])
for e in epochs:
    say(abs(e["grad_norm_clipped"] - min(e["grad_norm"], 0.1)) < 1e-4 * e["grad_norm"],
        "epoch %d: grad_norm %.3g before the clip, %.3g after" % (e["epoch"], e["grad_norm"], e["grad_norm_clipped"]))
    say(0 < e["clip_fraction"] <= 1 and e["clip_steps"] == round(e["clip_fraction"] * 20),
        "epoch %d: clipped %d of 20 steps" % (e["epoch"], e["clip_steps"]))
    L = e["layers"]
    widths, fan_in = [12, 8, 4], [16, 12, 8]
    say(len(L) == 3, "three layers")
    say(all(sum(L[l]["act_hist"]["counts"]) == 16 * widths[l] for l in range(3)),
        "activation histograms count the batch x width of each layer")
    say(all(sum(L[l]["grad_hist"]["counts"]) == widths[l] * fan_in[l] for l in range(3)),
        "gradient histograms count each layer weights")
    say(all(L[l]["act_hist"]["lo"] <= L[l]["act_mean"] <= L[l]["act_hist"]["hi"] for l in range(3)), "histogram ranges hold the mean")
    say(all(0 <= L[l]["saturation"] <= 1 for l in range(2)) and L[2]["saturation"] is None,
        "saturation of the tanh layers %s, none for the output" % [L[l]["saturation"] for l in range(3)])
    g = math.sqrt(sum(x["grad_norm"] ** 2 for x in L))
    say(0 < g <= e["grad_norm"] * 1.5, "per-layer gradient norms %s (together %.3g)" % ([round(x["grad_norm"], 4) for x in L], g))
')
grep -q "clipped [0-9]*%" sync.log && ok "the epoch line gives the clip rate" || bad "no clip rate in the epoch line"

# A resume from the mid-epoch checkpoint of step 14 keeps steps 5 and 10 and
# writes 15.. again: every step line once, with the same losses.
cp m.jsonl whole.jsonl
run2 "${common[@]}" --metrics m.jsonl --checkpoint-dir ck2 --resume ck/ckpt-step00000014.h5 >resume.log 2>&1 \
  || bad "resumed run failed: $(tail -1 resume.log)"
tally < <($py - whole.jsonl m.jsonl <<'EOF'

import json, sys
a, b = ([json.loads(l) for l in open(p)] for p in sys.argv[1:])
sa = [(r["step"], r["loss"]) for r in a if r.get("kind") == "step"]
sb = [(r["step"], r["loss"]) for r in b if r.get("kind") == "step"]
print(("ok: " if sa == sb else "FAIL: ") + "after the resume the step lines are those of the whole run, once: %s" % [s for s, _ in sb])
EOF
)

# Async, 1 server + 1 worker: server 0 reports the same figures (no activations there).
"$mpiexec" --oversubscribe "$npflag" 2 "$bin" train "${common[@]}" --mode async --metrics a.jsonl --batch 32 \
  >async.log 2>&1 || bad "async run failed: $(tail -1 async.log)"
tally < <(check a.jsonl '
say([r["step"] for r in steps] == list(range(5, 41, 5)), "async: step lines every 5 updates: %s" % [r["step"] for r in steps])
say(any(r["grad_norm"] > 0.1 for r in steps), "async: the step lines norm is the workers, before the clip")
for e in epochs:
    L = e["layers"]
    say(abs(e["grad_norm_clipped"] - min(e["grad_norm"], 0.1)) < 1e-4 * e["grad_norm"] and 0 < e["clip_fraction"] <= 1,
        "async epoch %d: grad_norm %.3g, after the clip %.3g, clipped %.2f" % (e["epoch"], e["grad_norm"], e["grad_norm_clipped"], e["clip_fraction"]))
    say(all(x["update_ratio"] > 0 and x["grad_norm"] > 0 for x in L), "async epoch %d: per-layer update ratios and gradient norms" % e["epoch"])
    say(sum(L[0]["grad_hist"]["counts"]) == 12 * 16, "async epoch %d: gradient histograms" % e["epoch"])
')

# --log-every needs somewhere to write.
"$bin" train --data d.h5 --log-every 5 >noflag.log 2>&1
[ $? -eq 2 ] && grep -q "^nndist: error: --log-every 5: needs --metrics" noflag.log && ok "--log-every without --metrics is refused" \
  || bad "--log-every without --metrics: $(cat noflag.log)"

# plot-metrics draws the step losses and the health figures.
if $py -c "import matplotlib" 2>/dev/null; then
  $py "$here/../launch/plot-metrics" m.jsonl plot.png >plot.log 2>&1 && [ -s plot.png ] \
    && ok "plot-metrics draws a run with step lines and histograms" || bad "plot-metrics: $(tail -2 plot.log)"
  $py "$here/../launch/plot-metrics" a.jsonl aplot.png >plot.log 2>&1 && [ -s aplot.png ] \
    && ok "plot-metrics draws an async run" || bad "plot-metrics async: $(tail -2 plot.log)"
else
  echo "plot-metrics not tried: no matplotlib (launch/install-deps python3-matplotlib)"
fi
echo "$passed passed, $failed failed"
[ $failed -eq 0 ]
