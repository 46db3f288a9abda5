#!/usr/bin/python3
"""nndist's full-batch L-BFGS (train --opt lbfgs) beside PyTorch's
torch.optim.LBFGS(line_search_fn="strong_wolfe") on the same problem: a
linear softmax model (784-10, no hidden layer) on the first ROWS rows of
Fashion-MNIST's /train, both starting from zero weights, inputs scaled to
[0, 1] (the file's uint8 times its scale; --normalize none), the same L2
term 0.5*wd*|W|^2 on the weights (not the biases), the same history,
max_iter per step (one nndist epoch = one LBFGS.step) and tolerances.
PyTorch runs in float32 (as nndist) and in float64 for reference. The
training loss (mean cross-entropy, no penalty) of each at its final
weights is computed here in float64 from the weights (nndist's from its
--save file); the check fails when nndist's and float32 PyTorch's differ by
more than --tol (1e-4). Exits 77 (ctest: skipped) without Debian's
python3-torch, numpy and h5py. Without the Fashion-MNIST file it runs on a
synthetic 784-feature, 10-class set from `nndist data synth` and says so.
  torch_lbfgs_check.py NNDIST [--data FILE] [--rows 2000] [--epochs 5]
      [--max-iter 20] [--history 100] [--wd 1e-3] [--np 1] [--tol 1e-4]
      [--out FILE.md]"""
import argparse, os, re, subprocess, sys, tempfile

try:
    import h5py
    import numpy as np
    import torch
except ImportError as e:
    print("SKIPPED: needs Debian's python3-torch, python3-numpy and python3-h5py (%s)" % e)
    sys.exit(77)

ap = argparse.ArgumentParser()
ap.add_argument("nndist")
ap.add_argument("--data", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data",
                                               "fashion-mnist.h5"))
ap.add_argument("--rows", type=int, default=2000)
ap.add_argument("--epochs", type=int, default=5)
ap.add_argument("--max-iter", type=int, default=20)
ap.add_argument("--history", type=int, default=100)
ap.add_argument("--wd", type=float, default=1e-3)
ap.add_argument("--np", type=int, default=1)
ap.add_argument("--tol", type=float, default=1e-4)
ap.add_argument("--out", default="")
a = ap.parse_args()
torch.set_num_threads(1)

tmp = tempfile.mkdtemp(prefix="lbfgs-check-")
source = a.data
if not os.path.exists(a.data):
    source = os.path.join(tmp, "synth.h5")
    subprocess.run([a.nndist, "data", "synth", "--out", source, "--rows", str(a.rows), "--test-rows", "0",
                    "--features", "784", "--classes", "10", "--separation", "0.5"], check=True,
                   stdout=subprocess.DEVNULL)
    print("(%s not found: a synthetic 784-feature, 10-class set instead)" % a.data)

# The rows both sides train on, as the floats nndist reads (uint8 x scale in float32).
with h5py.File(source, "r") as f:
    dx = f["train/x"]
    x = dx[:a.rows].reshape(min(a.rows, dx.shape[0]), -1)
    if x.dtype == np.uint8:
        x = x.astype(np.float32) * np.float32(dx.attrs.get("scale", 1.0))
    x = x.astype(np.float32)
    y = f["train/y"][:a.rows].astype(np.int32)
    classes = int(f.attrs.get("num_classes", int(y.max()) + 1))
rows, cols = x.shape
sub = os.path.join(tmp, "rows.h5")
with h5py.File(sub, "w") as f:
    f["train/x"] = x
    f["train/y"] = y
    f.attrs["num_classes"] = np.int32(classes)

# nndist.
launch = []
if a.np > 1:
    launch = ["mpiexec", "-n", str(a.np), "--oversubscribe"]
    if os.geteuid() == 0:
        launch.insert(1, "--allow-run-as-root")
model = os.path.join(tmp, "model.h5")
cmd = launch + [a.nndist, "train", "--data", sub, "--hidden", "", "--init", "zero", "--opt", "lbfgs", "--lr", "1",
                "--lbfgs-history", str(a.history), "--lbfgs-max-iter", str(a.max_iter), "--epochs", str(a.epochs),
                "--weight-decay", repr(a.wd), "--normalize", "none", "--progress", "none", "--threads", "1",
                "--save", model]
run = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
if run.returncode != 0:
    print(run.stdout)
    sys.exit("nndist failed: " + " ".join(cmd))
nd_objective = [float(m) for m in re.findall(r"^lbfgs epoch \d+: .* -> (\S+),", run.stdout, re.M)]
with h5py.File(model, "r") as f:
    nd_w = np.array(f["model/dense0/W"], dtype=np.float64)
    nd_b = np.array(f["model/dense0/b"], dtype=np.float64)

X64, Y = torch.from_numpy(x).double(), torch.from_numpy(y).long()


def data_loss(w, b):
    """Mean cross-entropy in float64 at weights w (classes x cols), b."""
    w, b = torch.as_tensor(w).double(), torch.as_tensor(b).double()
    return float(torch.nn.functional.cross_entropy(X64 @ w.T + b, Y))


def objective(w, b):
    w = torch.as_tensor(w).double()
    return data_loss(w, b) + 0.5 * a.wd * float((w * w).sum())


def torch_run(dtype):
    X = torch.from_numpy(x).to(dtype)
    W = torch.zeros(classes, cols, dtype=dtype, requires_grad=True)
    B = torch.zeros(classes, dtype=dtype, requires_grad=True)
    opt = torch.optim.LBFGS([W, B], lr=1, max_iter=a.max_iter, history_size=a.history,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(X @ W.T + B, Y) + 0.5 * a.wd * (W * W).sum()
        loss.backward()
        return loss

    per_epoch = []
    for _ in range(a.epochs):
        opt.step(closure)
        per_epoch.append(objective(W.detach(), B.detach()))
    return W.detach(), B.detach(), per_epoch


w32, b32, obj32 = torch_run(torch.float32)
w64, b64, obj64 = torch_run(torch.float64)
nd_loss, t32_loss, t64_loss = data_loss(nd_w, nd_b), data_loss(w32, b32), data_loss(w64, b64)
diff = abs(nd_loss - t32_loss)
what = "Fashion-MNIST" if source == a.data else "synthetic"
lines = ["%s, first %d rows, 784-10 softmax, zero init, wd %g, history %d, %d epochs x max_iter %d, %d rank(s)"
         % (what, rows, a.wd, a.history, a.epochs, a.max_iter, a.np), "",
         "| epoch | nndist objective | PyTorch float32 | PyTorch float64 |", "|---|---|---|---|"]
for e in range(a.epochs):
    nd_e = "%.7f" % nd_objective[e] if e < len(nd_objective) else "?"
    lines.append("| %d | %s | %.7f | %.7f |" % (e + 1, nd_e, obj32[e], obj64[e]))
lines += ["", "final training loss (mean cross-entropy, float64 at the final weights):",
          "  nndist %.7f, PyTorch float32 %.7f, PyTorch float64 %.7f" % (nd_loss, t32_loss, t64_loss),
          "  |nndist - PyTorch float32| = %.2e, |nndist - PyTorch float64| = %.2e (tolerance %.0e)"
          % (diff, abs(nd_loss - t64_loss), a.tol)]
text = "\n".join(lines)
print(text)
if a.out:
    with open(a.out, "w") as f:
        f.write(text + "\n")
if not diff <= a.tol:
    sys.exit("FAILED: nndist's L-BFGS loss differs from PyTorch's by %.2e > %.0e" % (diff, a.tol))
print("OK")
