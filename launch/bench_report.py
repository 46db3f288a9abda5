#!/usr/bin/python3
"""Turns launch/bench's measurements (one JSON object per line) into the
table it prints and, with --markdown, BENCHMARKS.md. Medians over the
repeats; every ratio compares figures measured in the same sitting."""
import argparse, collections, datetime, json, statistics

TARGET_RATIO = {(1, 64): 1.4, (1, 256): 1.1, (2, 64): 3.0, (2, 256): 2.5}
TARGET_SCALING = {64: 0.85, 256: 0.90}
TARGET_COMPUTE = {(1, 256): 0.80}
TARGET_COMM = 1.2  # per-step gradient communication over a bare allreduce
TARGET_CEILING = {64: 0.90}  # issue 17: 2-rank sync over two one-rank runs at once
PHASES = ("data", "forward", "backward", "wait", "comm", "update")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--results", required=True)
    ap.add_argument("--machine", default="?")
    ap.add_argument("--versions", default="?")
    ap.add_argument("--epochs", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=0)
    ap.add_argument("--markdown")
    ap.add_argument("--stream-mb", type=float, default=0)
    ap.add_argument("--stream-rows", type=int, default=0)
    ap.add_argument("--load", default="?")
    ap.add_argument("--compare")
    a = ap.parse_args()
    runs = collections.defaultdict(list)
    for line in open(a.results):
        d = json.loads(line)
        runs[(d["kind"], d["np"], d["batch"])].append(d)

    def med(kind, np, b, key, sub=None):
        vals = []
        for d in runs.get((kind, np, b), []):
            v = d.get(key)
            if sub is not None and isinstance(v, dict):
                v = v.get(sub)
            if v is not None:
                vals.append(v)
        return statistics.median(vals) if vals else None

    def per_step_ms(kind, np, b, phase):
        vals = [1e3 * d["phase_seconds"][phase] / d["steps"] for d in runs.get((kind, np, b), [])
                if "phase_seconds" in d and d.get("steps")]
        return statistics.median(vals) if vals else None

    nps = sorted({k[1] for k in runs if k[0] == "nndist"})
    batches = sorted({k[2] for k in runs if k[0] == "nndist"})
    verdicts = []
    out = []

    def check(name, value, target, sense=1):
        if value is None:
            return "-"
        ok = value >= target if sense > 0 else value <= target
        verdicts.append((name, value, target, ok, sense))
        return "met" if ok else "NOT met"

    out.append("| np | batch/rank | nndist samples/s | peer samples/s | ratio | target | | scaling 1->2 | target | "
               "| of compute-bound | nndist peak RSS MB (bound) | peer peak RSS MB | nndist acc | peer acc |")
    out.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for np in nps:
        for b in batches:
            nd, pe = med("nndist", np, b, "samples_per_s"), med("peer", np, b, "samples_per_s")
            if nd is None or pe is None:
                continue
            ratio = nd / pe
            tr = TARGET_RATIO.get((np, b))
            row = [str(np), str(b), f"{nd:,.0f}", f"{pe:,.0f}", f"{ratio:.3f}",
                   f">= {tr}" if tr else "", check(f"np {np} batch {b}: nndist / peer", ratio, tr) if tr else ""]
            nd1 = med("nndist", 1, b, "samples_per_s")
            if np == 2 and nd1:
                eff = nd / (2 * nd1)
                ts = TARGET_SCALING.get(b)
                row += [f"{100 * eff:.0f}%", f">= {100 * ts:.0f}%" if ts else "",
                        check(f"batch {b}: scaling efficiency 1 -> 2 ranks", eff, ts) if ts else ""]
            else:
                row += ["", "", ""]
            cb = med("limits", np, b, "compute_bound_samples_per_s")
            if cb:
                frac = nd / (np * cb)
                tc = TARGET_COMPUTE.get((np, b))
                row.append(f"{100 * frac:.0f}% of {np * cb:,.0f}" +
                           (f" ({check(f'np {np} batch {b}: fraction of the compute-bound rate', frac, tc)}, target >= {100 * tc:.0f}%)" if tc else ""))
            else:
                row.append("")
            mem = [d.get("memory_mb") for d in runs[("nndist", np, b)] if d.get("memory_mb")]
            if mem:
                m = mem[-1]
                bound = m["shards"] + 5 * m["parameters"] + m["activations"] + 80
                row.append(f"{m['peak_rss']:.0f} (<= {bound:.0f}: {check(f'np {np} batch {b}: peak RSS per rank within the bound', m['peak_rss'], bound, -1)})")
            else:
                row.append("")
            prss = med("peer", np, b, "peak_rss_mb")
            row.append(f"{prss:.0f}" if prss else "")
            row += [f"{med('nndist', np, b, 'test_accuracy'):.4f}", f"{med('peer', np, b, 'test_accuracy'):.4f}"]
            out.append("| " + " | ".join(row) + " |")
    # Async: 1 server + 2 workers against the peer's 2 DDP processes (same number of workers).
    for b in batches:
        for kind, label in (("nndist-async", "async"), ("nndist-async-overlap", "async --overlap")):
            nd, pe = med(kind, 3, b, "samples_per_s"), med("peer", 2, b, "samples_per_s")
            if nd is None or pe is None:
                continue
            out.append(f"| 3 ({label}: 1 server, 2 workers) | {b} | {nd:,.0f} | {pe:,.0f} (np 2) | {nd / pe:.2f} | | | | | | | "
                       f"{med(kind, 3, b, 'memory_mb', 'peak_rss'):.0f} | | {med(kind, 3, b, 'test_accuracy'):.4f} | |")

    out.append("")
    out.append("Machine limits measured in this sitting (`nndist bench`, one BLAS thread per rank, every rank busy):")
    out.append("")
    out.append("| np | batch | GEMM GFLOP/s per rank | FLOPs per sample | compute-bound samples/s per rank | bare MPI_Allreduce of the gradient (ms) | as 256-KiB non-blocking buckets (ms) | bare, caches flushed first (ms) |")
    out.append("|---|---|---|---|---|---|---|---|")
    for np in nps:
        for b in batches:
            if ("limits", np, b) not in runs:
                continue
            row = f"| {np} | {b} | {med('limits', np, b, 'gemm_gflops'):.1f} | {med('limits', np, b, 'flops_per_sample'):,.0f} | " \
                  f"{med('limits', np, b, 'compute_bound_samples_per_s'):,.0f} | "
            if np > 1:
                row += " | ".join(f"{med('limits', np, b, k):.3f}" for k in ("allreduce_ms", "bucketed_allreduce_ms", "cold_allreduce_ms"))
            else:
                row += "- | - | -"
            out.append(row + " |")

    out.append("")
    out.append("Where a step's time goes (nndist, rank 0, ms per step, median of the repeats), and the gradient "
               "exchange against a bare allreduce of the same bytes. A barrier before the exchange separates waiting "
               "for the other rank's compute (wait) from the transfer (comm); with buckets there is no barrier and "
               "comm is what backward did not hide:")
    out.append("")
    out.append("| np | batch | gradient exchange | samples/s | data | forward | backward | wait (imbalance) | comm | update | optimizer state MB/rank | comm / bare allreduce |")
    out.append("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for np in nps:
        for b in batches:
            for kind, label in (("nndist", "one blocking allreduce"), ("nndist-buckets", "256-KiB buckets, overlapped"),
                                ("nndist-zero", "ZeRO-1: reduce-scatter + allgather")):
                if (kind, np, b) not in runs:
                    continue
                ph = [per_step_ms(kind, np, b, p) or 0.0 for p in ("data", "forward", "backward", "wait", "comm", "update")]
                bare = med("limits", np, b, "allreduce_ms")
                rel = ""
                if np > 1 and bare:
                    r = ph[4] / bare
                    cold = med("limits", np, b, "cold_allreduce_ms")
                    rel = f"{r:.2f}" + (f"; {ph[4] / cold:.2f} of the flushed-cache one" if cold else "")
                    if kind == "nndist":
                        rel += f" ({check(f'np {np} batch {b}: comm per step / bare allreduce', r, TARGET_COMM, -1)}, target <= {TARGET_COMM})"
                    else:
                        blk = (per_step_ms("nndist", np, b, "comm") or 0.0) + (per_step_ms("nndist", np, b, "wait") or 0.0)
                        rel += (f" (exposed wait + comm {ph[3] + ph[4]:.3f} ms, {'lower' if ph[3] + ph[4] < blk else 'NOT lower'} than "
                                f"blocking's {blk:.3f})" if kind == "nndist-buckets" else "")
                state = med(kind, np, b, "memory_mb", "optimizer_state")
                out.append(f"| {np} | {b} | {label} | {med(kind, np, b, 'samples_per_s'):,.0f} | " +
                           " | ".join(f"{v:.3f}" for v in ph) + f" | {state:.2f} | {rel} |")

    ceiling_batches = [b for b in batches if ("ceiling-0", 2, b) in runs]
    if ceiling_batches:
        out.append("")
        out.append("The machine's ceiling for 2 ranks: two independent one-rank runs at once (one BLAS thread each, "
                   "samples/s summed), measured right after the 2-rank sync run of each round; each round's ratio "
                   "and their median" + (f"; `{a.compare}` is --compare's program, in the same rounds" if a.compare
                                         else "") + f". Load average at the end: {a.load}.")
        out.append("")
        out.append("| batch/rank | program | per round: 2-rank samples/s / ceiling samples/s = ratio | median ratio | target | |")
        out.append("|---|---|---|---|---|---|")

        def by_round(kind, b):
            return {d.get("round", 0): d for d in runs.get((kind, 2, b), [])}

        for b in ceiling_batches:
            c0, c1 = by_round("ceiling-0", b), by_round("ceiling-1", b)
            for kind, label in (("nndist", "nndist"), ("nndist-compare", "--compare"),
                                ("nndist-lockstep", "lockstep bound (local SGD, never averaged)")):
                nd = by_round(kind, b)
                pairs = [(nd[r]["samples_per_s"], c0[r]["samples_per_s"] + c1[r]["samples_per_s"])
                         for r in sorted(nd) if r in c0 and r in c1]
                if not pairs:
                    continue
                ratio = statistics.median(x / c for x, c in pairs)
                tc = TARGET_CEILING.get(b)
                verdict = check(f"{'--compare ' if kind != 'nndist' else ''}batch {b}: 2-rank sync / the ceiling",
                                ratio, tc) if tc and kind == "nndist" else ""
                target = f">= {tc}" if tc and kind == "nndist" else ""
                out.append(f"| {b} | {label} | " + "; ".join(f"{x:,.0f} / {c:,.0f} = {x / c:.3f}" for x, c in pairs) +
                           f" | **{ratio:.3f}** | {target} | {verdict} |")
        for b in ceiling_batches:
            c0, c1 = by_round("ceiling-0", b), by_round("ceiling-1", b)
            gaps = [abs(c0[r]["samples_per_s"] - c1[r]["samples_per_s"]) / max(c0[r]["samples_per_s"],
                                                                              c1[r]["samples_per_s"])
                    for r in sorted(c0) if r in c1]
            if gaps:
                out.append("")
                out.append(f"Batch {b}: the two one-rank runs of a round differ by {statistics.median(gaps):.1%} "
                           f"(median; {min(gaps):.1%} to {max(gaps):.1%}): the cores are not equal, and a synchronous "
                           "step goes at the slower one's pace.")
        out.append("")
        out.append("Where the time goes against the ceiling (ms per step, median of the rounds; the one-rank runs' "
                   "mean; a step is the same batch per rank in both):")
        out.append("")
        out.append("| batch/rank | run | " + " | ".join(PHASES) + " | step |")
        out.append("|---|---|" + "---|" * (len(PHASES) + 1))
        for b in ceiling_batches:
            for kind, label in (("nndist", "2-rank sync, rank 0"), ("nndist-compare", "--compare, rank 0"),
                                ("nndist-lockstep", "lockstep bound, rank 0"), ("ceiling", "one-rank runs at once")):
                kinds = ("ceiling-0", "ceiling-1") if kind == "ceiling" else (kind,)
                vals = []
                for p in PHASES:
                    v = [per_step_ms(k, 2, b, p) for k in kinds]
                    vals.append(statistics.mean(v) if all(x is not None for x in v) else None)
                if None in vals:
                    continue
                out.append(f"| {b} | {label} | " + " | ".join(f"{v:.3f}" for v in vals) + f" | {sum(vals):.3f} |")

    if ("nndist-memory", 2, 64) in runs and ("nndist-stream", 2, 64) in runs:
        out.append("")
        out.append(f"Data bigger than memory: a synthetic set of {a.stream_rows:,} x 784 float32 rows "
                   f"({a.stream_rows * 784 * 4 / 1048576:,.0f} MB, half per rank), one epoch on 2 ranks at batch 64, "
                   f"held in memory against streamed through two windows within `--stream-mb {a.stream_mb:g}` "
                   "(the file is in the page cache: this measures the reader's cost, not the disk):")
        out.append("")
        out.append("| path | samples/s | data ms/step | peak RSS MB per rank | data held MB per rank (test split included) |")
        out.append("|---|---|---|---|---|")
        for kind, label in (("nndist-memory", "in memory"), ("nndist-stream", f"--stream-mb {a.stream_mb:g}")):
            out.append(f"| {label} | {med(kind, 2, 64, 'samples_per_s'):,.0f} | {per_step_ms(kind, 2, 64, 'data'):.3f} | "
                       f"{med(kind, 2, 64, 'memory_mb', 'peak_rss'):.0f} | {med(kind, 2, 64, 'memory_mb', 'shards'):.0f} |")
        ratio = med("nndist-stream", 2, 64, "samples_per_s") / med("nndist-memory", 2, 64, "samples_per_s")
        out.append("")
        out.append(f"Streamed throughput is {100 * ratio:.1f}% of in-memory ({check('streaming throughput / in-memory', ratio, 0.90)}, target >= 90%).")

    lines = [f"- {name}: {value:.4g} against {'>=' if sense > 0 else '<='} {target:.4g}: {'met' if ok else 'NOT met'}"
             for name, value, target, ok, sense in verdicts]
    text = "\n".join(out)
    print(text)
    print()
    print("\n".join(lines))
    if a.markdown:
        with open(a.markdown, "w") as f:
            f.write("# Benchmarks\n\n")
            f.write("Written by `launch/bench` (rerun it to regenerate this file). nndist and the PyTorch DDP peer "
                    "(`../shared/peer/torch_ddp_mlp.py`) train the same MLP 784-512-256-10 on Fashion-MNIST with "
                    "momentum SGD, the same batch per rank and one BLAS thread per process, alternating run by run "
                    "in one sitting; figures are medians over the repeats. Only ratios measured in one sitting are "
                    "meant to be compared.\n\n")
            f.write(f"- date: {datetime.date.today().isoformat()}\n- machine: {a.machine}\n- software: {a.versions}\n"
                    f"- settings: {a.epochs} epochs per run, {a.repeats} repeats, `--threads 1`, "
                    "`OPENBLAS_NUM_THREADS=1` for the peer\n"
                    "- peak RSS: nndist's own figure (largest rank, from getrusage); the peer's from `/usr/bin/time` "
                    "(largest process). The bound is shards + 5 x parameters + activations + 80 MB.\n\n")
            f.write(text + "\n\nTargets of issue 6:\n\n" + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
