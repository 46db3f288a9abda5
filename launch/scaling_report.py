#!/usr/bin/python3
"""Reads the summaries and metrics a launch/scaling run wrote to DIR and
makes DIR/scaling.csv, DIR/throughput.png, DIR/accuracy.png and
DIR/staleness.png; prints the table. --runs "sync-np1 async-np2 ..." names
the runs to read (launch/scaling gives the ones it ran; a run that failed
has no summary and is left out); without it, every MODE-npN.json in DIR.
MODE is a mode or a named variant (buckets, bf16, topk, local, ...: see
launch/scaling). Columns beside throughput and accuracy: bytes_per_step
(what a rank put on the wire per step, from the summary when the exchange
reports it), time_to_target (training seconds until the per-epoch test
accuracy first reaches --target-acc; empty when it never does) and the
network (--network: the emulated rate, or shared memory).
The plots need matplotlib; without it only the table and the CSV."""
import argparse, csv, glob, json, os, re

ap = argparse.ArgumentParser()
ap.add_argument("dir")
ap.add_argument("--runs", default=None)
ap.add_argument("--cores", type=int, default=os.cpu_count())
ap.add_argument("--note", default="")
ap.add_argument("--network", default="")
ap.add_argument("--target-acc", type=float, default=None)
a = ap.parse_args()

if a.runs is not None:
    paths = [os.path.join(a.dir, n + ".json") for n in a.runs.split()]
else:
    paths = sorted(glob.glob(os.path.join(a.dir, "*-np*.json")))
runs = []
for path in paths:
    m = re.match(r"([\w+]+)-np(\d+)\.json$", os.path.basename(path))
    if not m or not os.path.exists(path):
        continue
    s = json.load(open(path))
    lines = [json.loads(l) for l in open(path[:-5] + ".jsonl") if l.strip()]
    epochs = [r for r in lines if r.get("kind", "epoch") == "epoch"]  # not --log-every's step lines
    runs.append({"mode": m.group(1), "np": int(m.group(2)), "summary": s, "epochs": epochs})
if not runs:
    raise SystemExit("scaling_report: no run of this study finished in %s" % a.dir)
base = next((r for r in runs if r["mode"] == "sync" and r["np"] == 1), None)
base_sps = base["summary"]["samples_per_s"] if base else None
VARIANTS = ["sync", "async", "ssp", "buckets", "bf16", "fp16", "buckets+bf16", "topk", "powersgd", "local"]
order = {m: i for i, m in enumerate(VARIANTS)}
runs.sort(key=lambda r: (order.get(r["mode"], 99), r["np"]))


def time_to_target(epochs):
    """Training seconds until the test accuracy first reaches the target."""
    clock = 0.0
    for e in epochs:
        clock += e.get("seconds", 0.0)
        if a.target_acc is not None and e.get("test_accuracy", -1.0) >= a.target_acc:
            return round(clock, 2)
    return ""


rows = []
for r in runs:
    s, ep = r["summary"], r["epochs"]
    stale = [e["staleness_mean"] for e in ep if "staleness_mean" in e]
    rows.append({
        "mode": r["mode"], "np": r["np"],
        "workers": r["np"] - (s["config"].get("servers", 0) if r["mode"] in ("async", "ssp") else 0),
        "oversubscribed": int(r["np"] > a.cores),
        "samples_per_s": round(s["samples_per_s"], 1),
        "efficiency": round(s["samples_per_s"] / (r["np"] * base_sps), 3) if base_sps else "",
        "speedup_vs_1": round(s["samples_per_s"] / base_sps, 3) if base_sps else "",
        "test_accuracy": s["test_accuracy"], "train_seconds": round(s["train_seconds"], 2),
        "staleness_mean": round(sum(stale) / len(stale), 3) if stale else "",
        "staleness_max": max(e["staleness_max"] for e in ep) if stale else "",
        "bytes_per_step": round(s["bytes_per_step"]) if s.get("bytes_per_step") is not None else "",
    })
    if a.target_acc is not None:
        rows[-1]["time_to_target"] = time_to_target(ep)
    rows[-1]["network"] = a.network
with open(os.path.join(a.dir, "scaling.csv"), "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)

cols = list(rows[0])
widths = [max(len(c), *(len(str(r[c])) for r in rows)) for c in cols]
print("  ".join(c.rjust(n) for c, n in zip(cols, widths)))
for r in rows:
    print("  ".join(str(r[c]).rjust(n) for c, n in zip(cols, widths)))
print("efficiency = samples/s / (np x samples/s of sync on 1 rank); oversubscribed = more ranks than the %d cores%s"
      % (a.cores, "; " + a.note if a.note else ""))
if a.target_acc is not None:
    print("time_to_target = training seconds until the test accuracy first reaches %g (empty: never)" % a.target_acc)

try:
    import matplotlib
except ImportError:
    print("wrote %s/scaling.csv; no plots: matplotlib is missing (Debian: launch/install-deps python3-matplotlib)"
          % a.dir)
    raise SystemExit(0)
matplotlib.use("Agg")
import matplotlib.pyplot as plt

modes = [m for m in VARIANTS if any(r["mode"] == m for r in rows)]
title = "nndist scaling (%d cores%s)" % (a.cores, ", " + a.note if a.note else "")
fig, ax = plt.subplots(1, 2, figsize=(11, 4))
for m in modes:
    pts = [r for r in rows if r["mode"] == m]
    ax[0].plot([r["np"] for r in pts], [r["samples_per_s"] for r in pts], "o-", label=m)
    if base_sps:
        ax[1].plot([r["np"] for r in pts], [r["efficiency"] for r in pts], "o-", label=m)
ax[0].set_xlabel("ranks"); ax[0].set_ylabel("samples/s"); ax[0].set_title("throughput")
ax[1].set_xlabel("ranks"); ax[1].set_ylabel("efficiency vs 1-rank sync"); ax[1].set_title("scaling efficiency")
nps = sorted({r["np"] for r in rows})
for x in ax:
    x.axvline(a.cores + 0.5, color="grey", ls=":", lw=1)  # right of it: oversubscribed
    x.set_xticks(nps)
    x.legend(); x.grid(alpha=.3)
fig.suptitle(title); fig.tight_layout(); fig.savefig(os.path.join(a.dir, "throughput.png"), dpi=110)

fig, ax = plt.subplots(1, 2, figsize=(11, 4))
colour = {m: "C%d" % i for i, m in enumerate(VARIANTS)}
styles = ["-", "--", ":", "-."]
for r in runs:
    ep = r["epochs"]
    if not ep or "test_accuracy" not in ep[0]:
        continue
    fmt = dict(color=colour.get(r["mode"], "black"), ls=styles[r["np"] % len(styles)], marker=".")
    t, acc, clock = [], [], 0.0
    for e in ep:
        clock += e["seconds"]; t.append(clock); acc.append(e["test_accuracy"])
    lab = "%s np%d" % (r["mode"], r["np"])
    ax[0].plot(t, acc, label=lab, **fmt)
    ax[1].plot([e["epoch"] for e in ep], acc, label=lab, **fmt)
ax[0].set_xlabel("training seconds"); ax[1].set_xlabel("epoch")
for x in ax:
    x.set_ylabel("test accuracy"); x.grid(alpha=.3)
ax[1].legend(fontsize=7, ncol=2)
fig.suptitle(title + ": test accuracy"); fig.tight_layout(); fig.savefig(os.path.join(a.dir, "accuracy.png"), dpi=110)

fig, ax = plt.subplots(figsize=(6, 4))
any_stale = False
for r in runs:
    hist = None
    for e in r["epochs"]:
        if "staleness_hist" in e:
            hist = [x + y for x, y in zip(hist, e["staleness_hist"])] if hist else list(e["staleness_hist"])
    if hist:
        any_stale = True
        total = float(sum(hist))
        ax.plot(range(len(hist)), [h / total for h in hist], "o-", label="%s np%d" % (r["mode"], r["np"]))
if any_stale:
    ax.set_xlabel("staleness (updates applied since the worker's copy; last bin: or more)")
    ax.set_ylabel("fraction of updates"); ax.legend(fontsize=8); ax.grid(alpha=.3)
    ax.set_title(title + ": staleness")
    fig.tight_layout(); fig.savefig(os.path.join(a.dir, "staleness.png"), dpi=110)
print("wrote %s/scaling.csv, throughput.png, accuracy.png%s" % (a.dir, ", staleness.png" if any_stale else ""))
