#!/usr/bin/python3
"""nndist's convolution and pooling layers beside PyTorch's nn.Conv2d,
MaxPool2d and AvgPool2d on the same weights and inputs: forward and every
gradient, for a set of shapes (stride, padding, odd sizes, overlapping
windows). Prints the largest absolute and relative difference of each and
fails above 1e-4 relative to the largest value. Exits 77 (ctest: skipped)
when Debian's python3-torch is not installed; the required suite does not
depend on torch.
  torch_conv_check.py CONV_IO   (the tests' conv_io helper)"""
import os, struct, subprocess, sys, tempfile

try:
    import numpy as np
    import torch
except ImportError as e:
    print("SKIPPED: needs Debian's python3-torch and python3-numpy (%s)" % e)
    sys.exit(77)

helper = sys.argv[1]
torch.manual_seed(3)
cases = [  # kind, batch, c, h, w, out_c, k, stride, pad
    ("conv", 3, 2, 9, 9, 4, 3, 1, 1), ("conv", 2, 3, 8, 7, 5, 3, 2, 1), ("conv", 2, 1, 28, 28, 8, 5, 1, 2),
    ("conv", 2, 4, 7, 7, 6, 1, 2, 0), ("conv", 2, 6, 6, 6, 3, 1, 1, 0), ("conv", 2, 2, 10, 9, 3, 4, 3, 2),
    ("conv", 2, 32, 14, 14, 64, 3, 1, 1), ("conv", 2, 32, 28, 28, 32, 3, 1, 1),
    ("conv", 2, 16, 9, 9, 4, 3, 1, 1), ("maxpool", 3, 4, 8, 8, 4, 2, 2, 0), ("maxpool", 2, 3, 7, 9, 3, 3, 2, 0),
    ("avgpool", 2, 3, 8, 8, 3, 2, 2, 0), ("avgpool", 2, 2, 7, 7, 2, 3, 2, 0)]
worst = 0.0
for kind, b, c, h, w, oc, k, s, p in cases:
    x = torch.randn(b, c, h, w, dtype=torch.float32, requires_grad=True)
    if kind == "conv":
        layer = torch.nn.Conv2d(c, oc, k, stride=s, padding=p)
    elif kind == "maxpool":
        layer = torch.nn.MaxPool2d(k, stride=s)
    else:
        layer = torch.nn.AvgPool2d(k, stride=s)
    y = layer(x)
    dout = torch.randn_like(y)
    y.backward(dout)
    with tempfile.TemporaryDirectory() as d:
        fin, fout = os.path.join(d, "in"), os.path.join(d, "out")
        with open(fin, "wb") as f:
            f.write(struct.pack("9i", ["conv", "maxpool", "avgpool"].index(kind), b, c, h, w, oc, k, s, p))
            f.write(x.detach().numpy().astype(np.float32).tobytes())
            if kind == "conv":
                f.write(layer.weight.detach().numpy().astype(np.float32).tobytes())
                f.write(layer.bias.detach().numpy().astype(np.float32).tobytes())
            f.write(dout.numpy().astype(np.float32).tobytes())
        subprocess.run([helper, fin, fout], check=True)
        got = np.fromfile(fout, dtype=np.float32)
    want = [("forward", y.detach().numpy()), ("dx", x.grad.numpy())]
    if kind == "conv":
        want += [("dW", layer.weight.grad.numpy()), ("db", layer.bias.grad.numpy())]
    at, parts = 0, []
    for name, ref in want:
        mine = got[at:at + ref.size].reshape(ref.shape)
        at += ref.size
        diff = float(np.abs(mine - ref).max())
        rel = diff / max(float(np.abs(ref).max()), 1e-30)
        worst = max(worst, rel)
        parts.append("%s %.1e (%.1e rel)" % (name, diff, rel))
    print("%-7s %dx%dx%dx%d -> %s k%d s%d p%d: %s" % (kind, b, c, h, w, tuple(y.shape[1:]), k, s, p, ", ".join(parts)))
print("largest relative difference from PyTorch %s: %.2e" % (torch.__version__, worst))
sys.exit(0 if worst < 1e-4 else 1)
