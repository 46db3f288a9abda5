#!/usr/bin/env python3
"""The driver behind launch/simulate (see its header and docs/simulation.md).

Study: writes a SimGrid platform (a cluster behind one switch, or a fat
tree), runs `smpirun ... nndist train` for every mode and rank count, reads
each run's --summary JSON (simulated time: nndist's clock is SMPI's) and
writes OUT/simulate.csv and OUT/simulate.png (throughput and scaling
efficiency against ranks; skipped without matplotlib).

Validation (--validate): this machine as a platform (one host with its
cores, the shared-memory transport as its loopback link, calibrated from
`nndist bench`), the same jobs run for real (mpirun) and simulated,
interleaved, at each of --nps; writes OUT/validate.csv and prints the
table (measured, predicted, error).
"""
import argparse
import csv
import json
import os
import re
import statistics
import subprocess
import sys
import time

BIN = os.environ.get("NNDIST_BIN", "nndist")
SIM_BIN = os.environ.get("NNDIST_SIMGRID_BIN", "nndist")
RUNS = os.environ.get("NNDIST_RUNS", "runs")

# Mode name -> nndist train options. A mode the program does not have
# fails with the program's own line (shown), not the script.
MODES = {
    "sync": ["--mode", "sync"],
    "async": ["--mode", "async"],
    "ssp": ["--mode", "ssp", "--max-staleness", "2"],
    "local": ["--mode", "local", "--sync-every", "8"],
}


def die(msg):
    sys.exit(f"simulate: {msg}")


def rate_value(text, units):
    """'10Gbps' -> 1e10 (units: suffix -> factor)."""
    m = re.fullmatch(r"([0-9.eE+-]+)\s*([A-Za-z]*)", text.strip())
    if not m or m.group(2) not in units:
        die(f"'{text}' is not a number with one of the units {', '.join(u for u in units if u)}")
    return float(m.group(1)) * units[m.group(2)]


BW_UNITS = {"bps": 1 / 8, "kbps": 1e3 / 8, "Mbps": 1e6 / 8, "Gbps": 1e9 / 8, "Tbps": 1e12 / 8,
            "Bps": 1, "kBps": 1e3, "MBps": 1e6, "GBps": 1e9, "TBps": 1e12}
LAT_UNITS = {"s": 1, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}


def platform_xml(kind, nodes, speed, bw, lat, cores=1, loop_bw=None, loop_lat=None):
    """SimGrid 4.1 platform: hosts h0..h{nodes-1}. speed in flop/s, bw in
    bytes/s, lat in s. cluster: one private link per host to a switch
    whose backbone never limits (a non-blocking switch); fat-tree: a
    two-level fat tree of switches with the same links."""
    head = ("<?xml version='1.0'?>\n<!DOCTYPE platform SYSTEM \"https://simgrid.org/simgrid.dtd\">\n"
            "<platform version=\"4.1\">\n")
    common = (f'id="c" prefix="h" suffix="" radical="0-{nodes - 1}" speed="{speed:.6g}f" core="{cores}" '
              f'bw="{bw:.6g}Bps" lat="{lat:.6g}s"')
    if loop_bw:
        common += f' loopback_bw="{loop_bw:.6g}Bps" loopback_lat="{loop_lat:.6g}s"'
    if kind == "cluster":
        body = f'  <cluster {common} bb_bw="{bw * nodes:.6g}Bps" bb_lat="0s"/>\n'
    else:
        # 2 levels: leaves of up to 32 hosts, as many top switches as
        # leaves' uplinks, one link each way (full bisection).
        down = min(nodes, 32)
        leaves = (nodes + down - 1) // down
        if leaves * down != nodes:
            die(f"--platform fat-tree: --nodes {nodes} is not a multiple of {down}")
        if leaves == 1:
            body = f'  <cluster {common} topology="FAT_TREE" topo_parameters="1;{down};1;1"/>\n'
        else:
            body = (f'  <cluster {common} topology="FAT_TREE" '
                    f'topo_parameters="2;{down},{leaves};1,{down};1,1"/>\n')
    return head + body + "</platform>\n"


def summary_of(path):
    try:
        with open(path) as f:
            s = json.load(f)
        return s if s.get("status") == "completed" else None
    except (OSError, ValueError):
        return None


def step_ms(s, batch, np_, mode):
    """Time of one step of one worker, from the summary's samples/s: the
    workers are every rank in sync and local, all but the servers in
    async and ssp."""
    sps = s.get("samples_per_s") or 0
    if not sps:
        return None
    workers = np_ - int(s.get("config", {}).get("servers", 1)) if mode in ("async", "ssp") else np_
    return 1000.0 * batch * max(workers, 1) / sps


def run(cmd, log, timeout=None):
    t0 = time.time()
    with open(log, "w") as f:
        f.write(" ".join(cmd) + "\n")
        f.flush()
        try:
            rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            rc = 124
    return rc, time.time() - t0


def last_error(log):
    """The program's own error line, else the log's last line."""
    try:
        lines = open(log).read().splitlines()[1:]
    except OSError:
        return ""
    errs = [l for l in lines if "error:" in l]
    return (errs[-1] if errs else lines[-1] if lines else "").strip()


def smpirun(np_, platform, hostfile, speed, extra_cfg=()):
    # host-speed = the platform's host speed: the compute SMPI measures on
    # this machine is replayed as it was measured. ompi: Open MPI's choice
    # of collective algorithms (what the real runs use). bw/lat factors 1:
    # the links are the plain alpha-beta model the platform states.
    return ["smpirun", "-np", str(np_), "-platform", platform, "-hostfile", hostfile,
            f"--cfg=smpi/host-speed:{speed:.6g}f", "--cfg=smpi/coll-selector:ompi",
            "--cfg=smpi/bw-factor:0:1", "--cfg=smpi/lat-factor:0:1", "--cfg=smpi/display-timing:yes",
            "--log=root.thres:warning", "--log=smpi_config.thres:error", *extra_cfg]


def bench_json(cmd, log):
    rc, _ = run(cmd, log)
    if rc != 0:
        die(f"{' '.join(cmd[:4])}...: failed ({last_error(log) or 'see ' + log})")
    for line in reversed(open(log).read().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    die(f"no JSON line in {log}")


def make_data(out, rows, features, classes):
    path = os.path.join(out, f"synth-{rows}x{features}.h5")
    if not os.path.exists(path):
        r = subprocess.run([BIN, "data", "synth", "--out", path, "--rows", str(rows), "--test-rows", "256",
                            "--features", str(features), "--classes", str(classes)], capture_output=True, text=True)
        if r.returncode != 0:
            die(f"data synth: {r.stderr.strip() or r.stdout.strip()}")
    return path


def gemm_speed(out):
    """This machine's GEMM rate of the model's shapes, one rank, one thread
    (flop/s): the host speed of a calibrated platform."""
    b = bench_json([BIN, "bench", "--seconds", "0.2", "--iters", "20"], os.path.join(out, "bench-gemm.log"))
    return b["gemm_gflops"] * 1e9


PROFILE_LINE = re.compile(r"profile step (\d+): data ([\d.]+) ms forward ([\d.]+) ms backward ([\d.]+) ms")


def measure_compute(one_rank, stem, cores, nice=()):
    """What a step costs here when every core is busy: one 1-rank run of
    one_rank (an nndist train command) per core at once. The mean ms per
    step of (data, forward and backward) and of the optimizer update, and
    the coefficient of variation of the former from step to step (every
    step's profile but the first 5, all cores' runs pooled: the cores
    differ too)."""
    logs = [f"{stem}-all{c}.log" for c in range(cores)]
    procs = []
    for c in range(cores):
        with open(logs[c], "w") as f:
            procs.append(subprocess.Popen(list(nice) + one_rank + ["--summary", f"{stem}-all{c}.json", "--profile",
                                                                  "100000", "--progress", "none"],
                                          stdout=f, stderr=subprocess.STDOUT))
    for pr in procs:
        pr.wait()
    alls = [summary_of(f"{stem}-all{c}.json") for c in range(cores)]
    if not all(alls):
        die(f"--calibrate: the 1-rank runs failed (see {logs[0]})")
    ph = lambda x, *k: 1e3 * sum(x["phase_seconds"][i] for i in k) / x["steps"]
    steps = [float(m[2]) + float(m[3]) + float(m[4]) for log in logs for m in PROFILE_LINE.finditer(open(log).read())
             if int(m[1]) > 5]
    cv = statistics.stdev(steps) / statistics.mean(steps) if len(steps) > 2 else 0.0
    return (statistics.mean(ph(x, "data", "forward", "backward") for x in alls),
            statistics.mean(ph(x, "update") for x in alls), cv)


# --calibrate: the model's compute is stated to the simulation, and SMPI's
# own timing is off: the calibration's phases already hold the step's
# bookkeeping, which SMPI would count again (and slower: cold caches).
# Runs whose exchange computes (--compress: PowerSGD's products, 16-bit
# conversions, top-k's selection) keep it on (timed_cfg).
STATED_CFG = ["--cfg=smpi/simulate-computation:no"]


def timed_cfg(opts, sim_cfg):
    return [] if "--compress" in opts else sim_cfg


def stated(step, update, cv):
    return ["--sim-step-ms", f"{step:.4f}", "--sim-update-ms", f"{update:.4f}", "--sim-step-cv", f"{cv:.4f}"]


def plot(rows, out, title):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("simulate: matplotlib is missing: no plot (the CSV has every figure)")
        return
    fig, ax = plt.subplots(1, 2, figsize=(11, 4.2))
    for name in sorted({r["run"] for r in rows}):
        pts = sorted((r for r in rows if r["run"] == name and r["samples_per_s"]), key=lambda r: r["np"])
        if not pts:
            continue
        ax[0].plot([r["np"] for r in pts], [r["samples_per_s"] for r in pts], "o-", label=name)
        ax[1].plot([r["np"] for r in pts], [r["efficiency"] for r in pts], "o-", label=name)
    for a in ax:
        a.set_xscale("log", base=2)
        a.set_xlabel("ranks (simulated)")
        a.grid(alpha=0.3)
    ax[0].set_yscale("log")
    ax[0].set_ylabel("samples/s (predicted)")
    ax[1].set_ylabel("scaling efficiency (vs 1 rank x ranks)")
    ax[1].set_ylim(0, 1.05)
    ax[0].legend(fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "simulate.png"), dpi=110)
    print(f"simulate: {os.path.join(out, 'simulate.png')}")


def study(a):
    out = a.out or os.path.join(RUNS, "simulate")
    os.makedirs(os.path.join(out, "runs"), exist_ok=True)
    nps = [int(x) for x in a.nps.split()] if a.nps else [n for n in (2 ** k for k in range(3, 21)) if n <= a.nodes]
    if max(nps) > a.nodes:
        die(f"--nps: {max(nps)} ranks need --nodes >= {max(nps)}")
    bw, lat = rate_value(a.bw, BW_UNITS), rate_value(a.lat, LAT_UNITS)
    speed = gemm_speed(out) if a.calibrate else rate_value(a.speed, {"f": 1, "kf": 1e3, "Mf": 1e6, "Gf": 1e9, "Tf": 1e12})
    plat = os.path.join(out, f"{a.platform}-{a.nodes}.xml")
    with open(plat, "w") as f:
        f.write(platform_xml(a.platform, a.nodes, speed, bw, lat))
    hosts = os.path.join(out, "hosts.txt")
    with open(hosts, "w") as f:
        f.write("".join(f"h{i}\n" for i in range(a.nodes)))
    features, classes = 784, 10
    # Each run's own file: --steps steps of --batch rows on every rank.
    def data_for(np_):
        return make_data(out, np_ * a.batch * a.steps, features, classes)

    runs = [(m, MODES.get(m, ["--mode", m])) for m in a.modes.split()]
    runs += [(f"sync+{c}", ["--mode", "sync", "--compress", c]) for c in (a.compress or "").split()]
    base = ["train", "--epochs", "1", "--batch", str(a.batch), "--hidden", a.hidden,
            "--threads", "1", "--save", "none", "--quiet", "--train-eval-rows", "0", "--eval-batch", "64"]
    sim_cfg = []
    if a.calibrate:
        # What a step costs on this machine with every core busy (256
        # steps of the same model, real), stated to every simulated rank:
        # nothing is computed in the simulation (docs/simulation.md).
        cores = os.cpu_count() or 1
        step, update, cv = measure_compute([BIN] + base + ["--data", make_data(out, 256 * a.batch, features, classes)],
                                           os.path.join(out, "runs", "calibrate"), cores)
        cv = cv if a.step_cv is None else a.step_cv
        base += stated(step, update, cv)
        sim_cfg = STATED_CFG
        how = (f"this machine's step stated (--calibrate: {step:.3f} ms of forward and backward, CV {cv:.3f} from step "
               f"to step, {update:.3f} ms of update, {cores} cores busy)")
    else:
        base += ["--sim-sample", str(a.sim_sample)]
        how = f"{a.sim_sample} computed steps then replayed (--sim-sample)"
    if a.straggle:
        base += ["--straggle", a.straggle]
    print(f"simulate: {a.platform} of {a.nodes} hosts, {a.bw} {a.lat} links, host speed {speed / 1e9:.3g} Gflop/s; "
          f"{a.steps} steps of batch {a.batch} per rank, {how}")
    # The 1-rank rate: the denominator of the scaling efficiency.
    one = os.path.join(out, "runs", "one-np1")
    rc, _ = run(smpirun(1, plat, hosts, speed, sim_cfg) + [SIM_BIN] + base + ["--data", data_for(1), "--summary", one + ".json"]
                + a.extra,
                one + ".log")
    s1 = summary_of(one + ".json")
    sps1 = s1["samples_per_s"] if s1 else None
    rows = []
    for name, opts in runs:
        for np_ in nps:
            stem = os.path.join(out, "runs", f"{name}-np{np_}")
            cmd = (smpirun(np_, plat, hosts, speed, timed_cfg(opts, sim_cfg)) + [SIM_BIN] + base + ["--data", data_for(np_)] + opts
                   + ["--summary", stem + ".json"] + a.extra)
            if os.path.exists(stem + ".json"):
                os.remove(stem + ".json")
            rc, wall = run(cmd, stem + ".log", timeout=a.run_timeout)
            s = summary_of(stem + ".json")
            row = {"run": name, "np": np_, "platform": a.platform, "bw": a.bw, "lat": a.lat,
                   "straggle": a.straggle or "", "samples_per_s": "", "step_ms": "", "efficiency": "",
                   "comm_s": "", "bytes_per_step": "", "wall_s": round(wall, 1), "note": ""}
            if s:
                row["samples_per_s"] = round(s["samples_per_s"], 1)
                row["step_ms"] = round(step_ms(s, a.batch, np_, name.split("+")[0]), 3)
                row["comm_s"] = s.get("phase_seconds", {}).get("comm", "")
                row["bytes_per_step"] = s.get("bytes_per_step", "")
                if sps1:
                    row["efficiency"] = round(s["samples_per_s"] / (np_ * sps1), 3)
            else:
                row["note"] = (last_error(stem + ".log") or f"exit {rc}, see {stem}.log").replace(",", ";")
            rows.append(row)
            print(f"  {name:14s} np {np_:5d}: {row['samples_per_s'] or '-':>10} samples/s  step "
                  f"{row['step_ms'] or '-':>8} ms  eff {row['efficiency'] or '-':>6}  ({row['wall_s']} s real)"
                  f"{'  ' + row['note'] if row['note'] else ''}", flush=True)
    path = os.path.join(out, "simulate.csv")
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0].keys()))
        w.writeheader()
        w.writerows(rows)
    print(f"simulate: {path} (1 rank: {sps1 or '-'} samples/s)")
    plot(rows, out, f"nndist simulated (SimGrid SMPI): {a.platform} of {a.nodes}, {a.bw}, {a.lat}, "
                    f"MLP 784-{a.hidden.replace(',', '-')}-10, batch {a.batch}/rank"
                    f"{', straggler ' + a.straggle if a.straggle else ''}")


def validate(a):
    """Real runs on this machine against their simulation on a platform
    calibrated to it, interleaved (job by job) so that the machine's load
    falls on both alike."""
    from shutil import which
    out = a.out or os.path.join(RUNS, "simulate-validate")
    os.makedirs(os.path.join(out, "runs"), exist_ok=True)
    cores = os.cpu_count() or 1
    nps = [int(x) for x in (a.nps or "2 4").split()]
    modes = (a.modes if a.modes != "sync async ssp local" else "sync async local").split()
    # --nice -19 (root): the measured and simulated runs ahead of the other
    # processes of a busy machine, so that they run as on an idle one.
    nice = ["nice", "-n", str(a.nice)] if a.nice else []
    # Yield when idle: a rank waiting in MPI gives its core to a rank that
    # computes, as a simulated rank does (SMPI's waits take no CPU); Open
    # MPI does so by itself only when it knows it is oversubscribed.
    mpirun = nice + ["mpirun", "--bind-to", "none", "--mca", "mpi_yield_when_idle", "1"]
    # The transports as links: each measured on 2 ranks (the fastest of 3:
    # a busy machine's scheduler only ever adds time), then the loopback's
    # bandwidth fitted so that the simulated transfer takes as long. A mode
    # is simulated on the link of the transport it really uses on one
    # node: sync the node's shared-memory sum (nd_node_sum, modelled as an
    # allreduce on a faster link), async and ssp MPI point-to-point, local
    # SGD MPI_Allreduce.
    benches = [bench_json(mpirun + ["-np", "2", BIN, "bench", "--seconds", "0.2", "--iters", "50"],
                          os.path.join(out, f"bench-real-{i}.log")) for i in range(3)]
    real = {k: min(b[k] for b in benches) for k in ("allreduce_ms", "barrier_us", "p2p_ms", "node_sum_ms")}
    real["gemm_gflops"] = max(b["gemm_gflops"] for b in benches)
    speed = real["gemm_gflops"] * 1e9
    lat = max(real["barrier_us"] * 1e-6 / 2, 1e-8)
    bw0 = 10e9
    plat = os.path.join(out, "machine.xml")
    hosts = os.path.join(out, "hosts.txt")
    with open(hosts, "w") as f:
        f.write("h0\n" * max(nps + [2]))

    def write_plat(bw, host_speed, host_cores=cores):
        with open(plat, "w") as f:
            f.write(platform_xml("cluster", 1, host_speed, bw, lat, cores=host_cores, loop_bw=bw, loop_lat=lat))

    write_plat(bw0, speed)
    sim = bench_json(nice + smpirun(2, plat, hosts, speed) + [SIM_BIN, "bench", "--seconds", "0.2", "--iters", "50"],
                     os.path.join(out, "bench-sim.log"))
    links = {"allreduce": bw0 * sim["allreduce_ms"] / real["allreduce_ms"],
             "p2p": bw0 * sim["p2p_ms"] / real["p2p_ms"],
             "shared-memory sum": bw0 * sim["allreduce_ms"] / max(real["node_sum_ms"], 1e-3)}
    link_of = {"sync": "shared-memory sum", "async": "p2p", "ssp": "p2p", "local": "allreduce"}
    print(f"validate: this machine: {cores} cores, GEMM {speed / 1e9:.3g} Gflop/s per rank; the 2-rank transports as "
          f"links of {lat * 1e6:.2g} us (barrier {real['barrier_us']:.3g} us): MPI_Allreduce of the gradient "
          f"{real['allreduce_ms']:.3g} ms ({links['allreduce'] / 1e9:.3g} GB/s), point-to-point {real['p2p_ms']:.3g} ms "
          f"({links['p2p'] / 1e9:.3g} GB/s), the shared-memory sum {real['node_sum_ms']:.3g} ms "
          f"({links['shared-memory sum'] / 1e9:.3g} GB/s)")
    data = make_data(out, a.validate_rows, 784, 10)
    base = ["train", "--data", data, "--epochs", "1", "--batch", str(a.batch), "--hidden", a.hidden,
            "--threads", "1", "--save", "none", "--quiet", "--train-eval-rows", "0", "--timeout", "0"]
    # The compute (--calibrate), measured around every real run on the
    # same job at one rank, one run per core at once (the real ranks share
    # the machine: memory bandwidth, caches; on a busy machine, less than a
    # core each), and stated to the simulation (--sim-step-ms,
    # --sim-update-ms; SMPI's own timing off): every simulated rank's step
    # costs what a real one costs when all cores are busy. SMPI's timing of
    # real compute is not used here: it runs all simulated ranks in one
    # process, one after the other, so each rank's compute starts with the
    # others' data in the caches (measured: a 2-rank simulation's forward
    # and backward 45% slower than a lone rank's).
    cal_stem = os.path.join(out, "runs", "calibrate")
    # Oversubscribed (more ranks than cores), as many 1-rank runs at once
    # as the job has ranks: their steps then hold the core's sharing (time
    # slices, caches refilled after each switch), and the simulated host
    # gets a core per rank so that it is not shared twice.
    measure_machine = lambda np_: measure_compute([BIN] + base, cal_stem, max(np_, cores), nice)

    rows = []
    for rep in range(a.repeats):
        for mode in modes:
            for np_ in nps:
                opts = MODES.get(mode, ["--mode", mode])
                stem_job = os.path.join(out, "runs", f"{mode}-np{np_}-r{rep}")
                over = ["--oversubscribe"] if np_ > cores else []
                bw, told, sim_cfg = links[link_of.get(mode, "allreduce")], [], []
                if a.calibrate:
                    before = measure_machine(np_)
                rc, _ = run(mpirun + ["-np", str(np_)] + over + [BIN] + base + opts
                            + ["--summary", stem_job + "-real.json"], stem_job + "-real.log")
                if a.calibrate:
                    after = measure_machine(np_)
                    step, update, cv = ((x + y) / 2 for x, y in zip(before, after))
                    cv = cv if a.step_cv is None else a.step_cv
                    told, sim_cfg = stated(step, update, cv), STATED_CFG
                    print(f"  calibrate: {max(np_, cores)} 1-rank runs at once: {step:.3f} ms per step (CV {cv:.3f}), "
                          f"{update:.3f} ms per update", flush=True)
                write_plat(bw, speed, max(np_, cores) if a.calibrate else cores)
                rc2, wall = run(nice + smpirun(np_, plat, hosts, speed, timed_cfg(opts, sim_cfg)) + [SIM_BIN] + base + opts + told
                                + ["--summary", stem_job + "-sim.json"], stem_job + "-sim.log")
                sr, ss = summary_of(stem_job + "-real.json"), summary_of(stem_job + "-sim.json")
                row = {"mode": mode, "np": np_, "repeat": rep, "oversubscribed": int(np_ > cores),
                       "link": link_of.get(mode, "allreduce"), "stated_step_ms": told[1] if told else "",
                       "stated_update_ms": told[3] if told else "", "stated_step_cv": told[5] if told else "",
                       "measured_step_ms": "", "predicted_step_ms": "", "error_pct": "",
                       "measured_samples_per_s": "", "predicted_samples_per_s": "", "sim_wall_s": round(wall, 1),
                       "note": ""}
                if sr and ss:
                    m, p = step_ms(sr, a.batch, np_, mode), step_ms(ss, a.batch, np_, mode)
                    row.update(measured_step_ms=round(m, 3), predicted_step_ms=round(p, 3),
                               error_pct=round(100 * (p - m) / m, 1),
                               measured_samples_per_s=round(sr["samples_per_s"]),
                               predicted_samples_per_s=round(ss["samples_per_s"]))
                else:
                    row["note"] = (last_error(stem_job + ("-real.log" if not sr else "-sim.log"))
                                   or "no summary").replace(",", ";")
                rows.append(row)
                print(f"  {mode:6s} np {np_}: measured {row['measured_step_ms'] or '-':>8} ms  predicted "
                      f"{row['predicted_step_ms'] or '-':>8} ms  error {row['error_pct']}%"
                      f"{'  ' + row['note'] if row['note'] else ''}", flush=True)
    # Each cell's median over the repeats (measured and predicted apart):
    # one round's figure swings with the machine's load.
    for mode in modes:
        for np_ in nps:
            cell = [r for r in rows if r["mode"] == mode and r["np"] == np_ and r["error_pct"] != ""]
            if not cell:
                continue
            m = statistics.median(r["measured_step_ms"] for r in cell)
            p = statistics.median(r["predicted_step_ms"] for r in cell)
            rows.append({**{k: "" for k in rows[0]}, "mode": mode, "np": np_, "repeat": "median",
                         "oversubscribed": int(np_ > cores), "link": cell[0]["link"], "measured_step_ms": round(m, 3),
                         "predicted_step_ms": round(p, 3), "error_pct": round(100 * (p - m) / m, 1),
                         "note": f"median of {len(cell)}"})
    path = os.path.join(out, "validate.csv")
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0].keys()))
        w.writeheader()
        w.writerows(rows)
    print(f"\n| mode | ranks | link | per round: measured / predicted ms (error) | median measured | median predicted "
          f"| error |\n|---|---|---|---|---|---|---|")
    for r in (r for r in rows if r["repeat"] == "median"):
        rounds = "; ".join(f"{x['measured_step_ms']} / {x['predicted_step_ms']} ({x['error_pct']:+}%)"
                           if x["error_pct"] != "" else x["note"] for x in rows
                           if x["mode"] == r["mode"] and x["np"] == r["np"] and x["repeat"] != "median")
        print(f"| {r['mode']} | {r['np']}{' (oversubscribed)' if r['oversubscribed'] else ''} | {r['link']} | {rounds} | "
              f"{r['measured_step_ms']} | {r['predicted_step_ms']} | {r['error_pct']:+}% |")
    print(f"simulate: {path}")


def main():
    p = argparse.ArgumentParser(prog="launch/simulate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--platform", choices=["cluster", "fat-tree"], default="cluster")
    p.add_argument("--nodes", type=int, default=1024)
    p.add_argument("--bw", default="10Gbps")
    p.add_argument("--lat", default="2us")
    p.add_argument("--speed", default="10Gf", help="host speed (flop/s) without --calibrate")
    p.add_argument("--modes", default="sync async ssp local")
    p.add_argument("--nps", default="")
    p.add_argument("--compress", default="", help="sync exchanges to add, e.g. 'bf16 powersgd'")
    p.add_argument("--straggle", default="")
    p.add_argument("--calibrate", action="store_true",
                   help="state this machine's measured step to every simulated rank (--sim-step-ms; docs/simulation.md)")
    p.add_argument("--sim-sample", type=int, default=4)
    p.add_argument("--step-cv", type=float, default=None,
                   help="--calibrate: the stated step's coefficient of variation (default: measured here; 0: none)")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--hidden", default="512,256")
    p.add_argument("--steps", type=int, default=8, help="steps per rank (one epoch of the synthetic data)")
    p.add_argument("--run-timeout", type=float, default=3600)
    p.add_argument("--validate", action="store_true")
    p.add_argument("--validate-rows", type=int, default=16384)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--nice", type=int, default=0, help="--validate: run every job under nice -n N (-19: ahead of a busy machine's other work; root)")
    p.add_argument("--out", default="")
    p.add_argument("extra", nargs="*", help="after --: more nndist train options")
    a = p.parse_args()
    if a.nodes < 1:
        die("--nodes must be >= 1")
    validate(a) if a.validate else study(a)


if __name__ == "__main__":
    main()
