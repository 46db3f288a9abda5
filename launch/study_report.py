#!/usr/bin/env python3
"""The scaling study on one figure: measured points (this machine's shared
memory, the emulated network) and simulated curves (SimGrid, up to 1024
ranks) for every mode, with the CSV behind it.

  study_report.py --out DIR [--measured LABEL=STUDY_DIR ...] [--simulated SIM_DIR ...]

Each STUDY_DIR is a launch/scaling output (its scaling.csv); SIM_DIR is a
launch/simulate output (its simulate.csv); several may be given (say
every mode up to 128 ranks, and sync alone up to 1024); for the same mode
and rank count a later one replaces an earlier one (a rerun with more
steps, say). Writes DIR/study.csv (one row
per point: source, mode, ranks, samples/s, scaling efficiency, bytes per
step, accuracy, time to target) and DIR/study.png (throughput and
efficiency against ranks, log axes: markers measured, lines simulated).
Standard library only; the figure needs matplotlib and is skipped with a
line without it."""
import argparse, csv, os, sys

ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
ap.add_argument("--out", required=True)
ap.add_argument("--measured", action="append", default=[], metavar="LABEL=DIR")
ap.add_argument("--simulated", action="append", default=[], metavar="SIM_DIR")
ap.add_argument("--title", default="nndist scaling study")
a = ap.parse_args()

# simulate.csv names a compressed sync run "sync+bf16"; the study's variant is "bf16".
SIM_NAMES = {"sync+bf16": "bf16", "sync+fp16": "fp16", "sync+powersgd": "powersgd", "sync+topk": "topk"}


def read(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def num(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


rows = []
for spec in a.measured:
    label, _, d = spec.partition("=")
    if not d:
        sys.exit(f"study_report: --measured {spec}: give LABEL=DIR")
    path = os.path.join(d, "scaling.csv")
    if not os.path.exists(path):
        sys.exit(f"study_report: {path}: no such file (run launch/scaling --out {d} first)")
    for r in read(path):
        rows.append({"source": label, "kind": "measured", "mode": r["mode"], "ranks": int(r["np"]),
                     "samples_per_s": num(r["samples_per_s"]), "efficiency": num(r.get("efficiency")),
                     "bytes_per_step": num(r.get("bytes_per_step")), "test_accuracy": num(r.get("test_accuracy")),
                     "time_to_target": num(r.get("time_to_target")), "step_ms": None,
                     "network": r.get("network", "")})
for sim_dir in a.simulated:
    path = os.path.join(sim_dir, "simulate.csv")
    if not os.path.exists(path):
        sys.exit(f"study_report: {path}: no such file (run launch/simulate --out {sim_dir} first)")
    for r in read(path):
        if num(r["samples_per_s"]) is None:
            continue  # a run that failed: its note is in simulate.csv
        mode = SIM_NAMES.get(r["run"], r["run"])
        rows = [x for x in rows if not (x["kind"] == "simulated" and x["mode"] == mode and x["ranks"] == int(r["np"]))]
        rows.append({"source": f"simulated {r['platform']} {r['bw']} {r['lat']}", "kind": "simulated",
                     "mode": mode, "ranks": int(r["np"]),
                     "samples_per_s": num(r["samples_per_s"]), "efficiency": num(r.get("efficiency")),
                     "bytes_per_step": num(r.get("bytes_per_step")), "test_accuracy": None,
                     "time_to_target": None, "step_ms": num(r.get("step_ms")), "network": r["bw"]})
if not rows:
    sys.exit("study_report: nothing to draw: give --measured and/or --simulated")
os.makedirs(a.out, exist_ok=True)
csv_path = os.path.join(a.out, "study.csv")
with open(csv_path, "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=list(rows[0]))
    w.writeheader()
    for r in sorted(rows, key=lambda r: (r["kind"], r["source"], r["mode"], r["ranks"])):
        w.writerow({k: ("" if v is None else v) for k, v in r.items()})
try:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
except ImportError:
    print(f"wrote {csv_path}; no figure: matplotlib is missing (Debian: launch/install-deps python3-matplotlib)")
    sys.exit(0)

modes = []
for r in rows:
    if r["mode"] not in modes:
        modes.append(r["mode"])
colors = {m: plt.cm.tab10(i % 10) for i, m in enumerate(modes)}
markers = ["o", "s", "^", "D", "v"]
sources = [s for s in dict.fromkeys(r["source"] for r in rows if r["kind"] == "measured")]
fig, axes = plt.subplots(1, 2, figsize=(13, 5.2))
for ax, key, label in ((axes[0], "samples_per_s", "samples/s (all ranks)"),
                       (axes[1], "efficiency", "scaling efficiency (vs 1 rank x ranks)")):
    for m in modes:
        sim = sorted((r for r in rows if r["kind"] == "simulated" and r["mode"] == m and r[key] is not None),
                     key=lambda r: r["ranks"])
        if sim:
            ax.plot([r["ranks"] for r in sim], [r[key] for r in sim], "-", color=colors[m], lw=1.6,
                    label=f"{m} (simulated)")
        for i, s in enumerate(sources):
            pts = [r for r in rows if r["source"] == s and r["mode"] == m and r[key] is not None]
            if pts:
                ax.plot([r["ranks"] for r in pts], [r[key] for r in pts], markers[i % len(markers)],
                        color=colors[m], ms=7, mfc="none" if i else colors[m], label=f"{m} ({s})")
    ax.set_xscale("log", base=2)
    if key == "samples_per_s":
        ax.set_yscale("log")
    ax.set_xlabel("ranks")
    ax.set_ylabel(label)
    ax.grid(True, which="both", alpha=0.3)
axes[0].legend(fontsize=7, ncol=2)
fig.suptitle(a.title, fontsize=10)
fig.tight_layout()
png = os.path.join(a.out, "study.png")
fig.savefig(png, dpi=110)
print(f"wrote {csv_path} and {png}")
