#!/usr/bin/python3
"""launch/export against nndist itself (run by test_export_torch.sh, which
skips when torch is missing). Two tiny nets trained one epoch on one rank:
an MLP with batch norm, every activation nndist has (maxout included),
input dropout and a dense residual block, on float features; and a
convolutional net (convolution with stride and padding, max and average
pooling, a residual block with a strided projection and batch norm, channel
dropout, global average pooling, flatten) on uint8 images with a scale. For
each, the TorchScript file that launch/export writes, loaded back, must give
nndist eval's test accuracy (up to the rows whose prediction flips between
float32 implementations, at most 0.1% of them) and nndist's logits within
float32 rounding.
  test_export_torch.py NNDIST TEST_EXPORT_LOGITS TMPDIR"""
import json
import os
import shutil
import subprocess
import sys

import h5py
import numpy as np

nndist, helper, tmp = sys.argv[1:4]
root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
export = os.path.join(root, "launch", "export")
work = os.path.join(tmp, "export_torch")
shutil.rmtree(work, ignore_errors=True)
os.makedirs(work)
failures = []


def run(*args):
    r = subprocess.run([str(a) for a in args], capture_output=True, text=True)
    if r.returncode != 0:
        print(r.stdout + r.stderr)
        sys.exit("FAIL: %s exited %d" % (" ".join(str(a) for a in args), r.returncode))
    return r.stdout


def uint8_images(path, rows, test_rows, shape, classes, seed):
    """Blobs of uint8 pixels, 4-D x with the scale attribute, as Fashion-MNIST's file."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(40, 215, size=(classes,) + shape)
    with h5py.File(path, "w") as f:
        f.attrs["num_classes"] = classes
        for split, n in (("train", rows), ("test", test_rows)):
            y = rng.integers(0, classes, n)
            x = np.clip(centres[y] + rng.normal(0, 60, size=(n,) + shape), 0, 255).astype(np.uint8)
            f.create_dataset(split + "/x", data=x).attrs["scale"] = np.float32(1 / 255)
            f.create_dataset(split + "/y", data=y.astype(np.int32))


def case(name, data, arch, extra=()):
    d = os.path.join(work, name)
    run(nndist, "train", "--data", data, "--arch", arch, "--epochs", 1, "--batch", 32, "--threads", 1,
        "--progress", "none", "--checkpoint-dir", d, *extra)
    ckpt = os.path.join(d, "latest")  # the link to the newest checkpoint
    ev = json.loads(run(nndist, "eval", "--checkpoint", ckpt, "--data", data, "--json"))
    mine = run(helper, ckpt, data, "test", os.path.join(d, "nndist.bin")).split()
    rows, k = int(mine[1]), int(mine[3])
    nd_logits = np.fromfile(os.path.join(d, "nndist.bin"), dtype=np.float32).reshape(rows, k)
    pt, onnx = os.path.join(d, "model.pt"), os.path.join(d, "model.onnx")
    out = run(export, ckpt, "--out", pt, "--onnx", onnx, "--check", data, "--json",
              "--logits", os.path.join(d, "torch.npy"))
    got = json.loads(out.strip().splitlines()[-1])
    th_logits = np.load(os.path.join(d, "torch.npy"))
    agree = float((th_logits.argmax(1) == nd_logits.argmax(1)).mean())
    scale = float(np.abs(nd_logits).max())
    diff = float(np.abs(th_logits - nd_logits).max())
    flipped = round((1 - agree) * rows)
    print("%-4s nndist eval %.6f, exported %.6f (%d rows), predictions agree on %.4f, largest logit difference "
          "%.2e of %.2e" % (name, ev["accuracy"], got["accuracy"], rows, agree, diff, scale))
    if abs(float(mine[5]) - ev["accuracy"]) > 1e-6:
        failures.append("%s: the logits helper's accuracy %s is not nndist eval's %g" % (name, mine[5], ev["accuracy"]))
    if agree < 0.999:
        failures.append("%s: predictions agree on only %.4f of the rows" % (name, agree))
    if abs(round(got["accuracy"] * rows) - round(ev["accuracy"] * rows)) > flipped:  # hits (eval prints 6 digits)
        failures.append("%s: accuracy %.6f, nndist eval %.6f, beyond the %d flipped rows" % (name, got["accuracy"],
                                                                                            ev["accuracy"], flipped))
    if not diff <= 1e-3 * max(1.0, scale):
        failures.append("%s: logits differ by %.3g (largest %.3g)" % (name, diff, scale))
    if "(ONNX" in out and not os.path.getsize(onnx) > 0:
        failures.append("%s: the ONNX file is empty" % name)
    return ckpt, d


flat = os.path.join(work, "flat.h5")
run(nndist, "data", "synth", "--out", flat, "--rows", 3000, "--test-rows", 2000, "--features", 24, "--classes", 5,
    "--separation", 1.2)
case("mlp", flat, "24:drop0.1-32:bn:relu:drop0.2-res(32:bn:leaky_relu0.2-32:bn):elu0.5-16:maxout3-16:bn:tanh-"
     "12:sigmoid-5")

images = os.path.join(work, "images.h5")
uint8_images(images, 2000, 1500, (1, 12, 12), 4, 5)
ckpt, d = case("cnn", images, "1x12x12-c6k3p1:bn:relu:cdrop0.1-mp3s2-res(c6k3p1:bn:relu-c12k3s2p1:bn):relu-ap2s1-"
               "c8k1:elu-gap-16:relu:drop0.3-4", ("--ema", "0.9"))
# The weight average exports too (nndist evaluates it only during training).
out = run(export, ckpt, "--weights", "ema", "--out", os.path.join(d, "ema.pt"), "--check", images)
print("cnn  --weights ema: " + out.strip().splitlines()[-1])

if failures:
    print("\n".join("FAIL: " + f for f in failures))
    sys.exit(1)
print("export matches nndist on both nets")
