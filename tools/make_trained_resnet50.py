#!/usr/bin/env python3
"""Train a full-size torchvision ResNet-50 briefly on procedural textures, so that it predicts decisively.

    OMP_NUM_THREADS=1 nice -n 19 venv-torch/bin/python tools/make_trained_resnet50.py OUTDIR

Why: the int8 rule (top-1 agreement >= 99%) needs a judge whose predictions are decisive the way a
trained network's are. Random weights on random inputs give a nearly flat softmax, where a change
in the sixth digit swaps classes; no pretrained ImageNet weights can be fetched here. This script
trains the unmodified torchvision `resnet50` architecture (width, depth, stem, 224x224 evaluation)
on a synthetic 100-class task, so BN running statistics, weights and logits have the structure of
a trained network, and writes the goldens with torch itself.

The task: class = (hue index 0..9) x (pattern 0..9). Patterns are drawn in pixel units (period
3.5-12 pixels), so a texture looks locally the same at the 40x40 training size and the 224x224
evaluation size; hue, phase, period, orientation, contrast and noise are jittered per image.
After training, the BN running statistics are re-estimated at 224x224 (train-mode forward passes
without gradients, cumulative average), because the evaluation size differs from the training one.
The held-out batch uses its own seed and is never seen in training. Nothing here looks at any
converted file: the benchmark is fixed before quantisation is measured.

Writes (outside the repository, about 180 MB):
  OUTDIR/resnet50.pth   torchvision state dict (zip container, float32), fc with 100 classes
  OUTDIR/io.npz         input [N,3,224,224] float32 (normalised), output = logits [N,100], layout NCHW,
                        labels [N] (the generator's class, for the accuracy printout only)
  OUTDIR/MANIFEST.json  versions, seeds, steps, training loss, held-out accuracy, logit-gap statistics
Pinned versions: tools/requirements-torch-fixtures.txt (torch 2.13.0 CPU, torchvision 0.28.0, numpy 2.4.6).
Cost: a few minutes of one core for the default 90 steps (batch 32 at 40x40), plus about a minute for
the 224x224 passes; run it under `nice`.
"""
import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

TRAIN_SEED = 5050
HELDOUT_SEED = 9090  # different stream from training; never used for training or BN statistics
BN_SEED = 7070
CLASSES = 100
MEAN = np.array([0.485, 0.456, 0.406], np.float32).reshape(3, 1, 1)
STD = np.array([0.229, 0.224, 0.225], np.float32).reshape(3, 1, 1)


def import_torch_resnet():
    """Imports torch and torchvision.models.resnet (see tools/torchvision_shim.py)."""
    import torch
    from torchvision_shim import import_torchvision
    torchvision, resnet, note = import_torchvision()
    return torch, torchvision, resnet, note


def hsv_to_rgb(h, s, v):
    """One colour, h in turns."""
    i = int(h * 6.0) % 6
    f = h * 6.0 - math.floor(h * 6.0)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    return np.array([(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i], np.float32)


def pattern(kind, size, rng):
    """A [size,size] map in [0,1] of pattern `kind`, drawn in pixel units so it is scale-free."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    period = rng.uniform(7.0, 12.0)
    phase = rng.uniform(0, 2 * math.pi)
    jitter = rng.uniform(-0.12, 0.12)  # radians of orientation jitter

    def grating(angle, per):
        u = xx * math.cos(angle) + yy * math.sin(angle)
        return 0.5 + 0.5 * np.sin(2 * math.pi * u / per + phase)

    if kind == 0:
        return grating(0.0 + jitter, period)                 # vertical stripes
    if kind == 1:
        return grating(math.pi / 2 + jitter, period)         # horizontal stripes
    if kind == 2:
        return grating(math.pi / 4 + jitter, period)         # diagonal /
    if kind == 3:
        return grating(-math.pi / 4 + jitter, period)        # diagonal \
    if kind == 4:
        return (grating(jitter, period) > 0.5) ^ (grating(math.pi / 2 + jitter, period) > 0.5)  # checkerboard
    if kind == 5:                                            # dots on a grid
        gx = (xx + rng.uniform(0, period)) % period - period / 2
        gy = (yy + rng.uniform(0, period)) % period - period / 2
        return (np.sqrt(gx * gx + gy * gy) < period * 0.28).astype(np.float32)
    if kind == 6:                                            # concentric rings around a random centre
        cx, cy = rng.uniform(0, size), rng.uniform(0, size)
        r = np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2)
        return 0.5 + 0.5 * np.sin(2 * math.pi * r / period + phase)
    if kind == 7:
        return grating(jitter, period * 0.5)                 # fine vertical stripes (period 3.5-6)
    if kind == 8:                                            # sparse bright specks
        return (rng.random((size, size)) < 0.04).astype(np.float32)
    # kind 9: cross-hatch (sum of two diagonal gratings)
    return 0.5 * (grating(math.pi / 4 + jitter, period) + grating(-math.pi / 4 + jitter, period))


def sample(label, size, rng):
    """One normalised [3,size,size] image of class `label`."""
    hue_idx, kind = divmod(label, 10)
    hue = (hue_idx / 10.0 + rng.uniform(-0.025, 0.025)) % 1.0
    fg = hsv_to_rgb(hue, rng.uniform(0.65, 1.0), rng.uniform(0.7, 1.0))
    bg = hsv_to_rgb(rng.random(), rng.uniform(0.0, 0.3), rng.uniform(0.05, 0.35))
    m = pattern(kind, size, rng).astype(np.float32)
    img = bg.reshape(3, 1, 1) * (1 - m) + fg.reshape(3, 1, 1) * m
    img = img + rng.normal(0, rng.uniform(0.02, 0.08), img.shape).astype(np.float32)
    img = np.clip(img, 0, 1)
    return ((img - MEAN) / STD).astype(np.float32)


def batch(n, size, rng, labels=None):
    if labels is None:
        labels = rng.integers(0, CLASSES, n)
    x = np.stack([sample(int(c), size, rng) for c in labels])
    return x, np.asarray(labels, np.int64)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("outdir")
    ap.add_argument("--steps", type=int, default=90)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--train-size", type=int, default=40)
    ap.add_argument("--heldout", type=int, default=128)
    # One thread: under `nice` on a shared machine, two OpenMP threads spent most of their CPU time
    # waiting for each other (measured: about 8x slower per step than one thread).
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    out = Path(a.outdir).resolve()
    if Path(__file__).resolve().parent.parent in [out, *out.parents]:
        raise SystemExit("the output must be outside the repository")
    out.mkdir(parents=True, exist_ok=True)

    torch, torchvision, tv_resnet, note = import_torch_resnet()
    torch.set_num_threads(a.threads)
    torch.manual_seed(TRAIN_SEED)
    model = tv_resnet.resnet50(num_classes=CLASSES, zero_init_residual=True)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    warm = max(1, a.steps // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(s, a.steps) / a.steps)))
    rng = np.random.default_rng(TRAIN_SEED)
    losses = []
    t0 = time.time()
    model.train()
    for step in range(a.steps):
        x, y = batch(a.batch, a.train_size, rng)
        logits = model(torch.from_numpy(x))
        loss = torch.nn.functional.cross_entropy(logits, torch.from_numpy(y))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        if step % 10 == 0 or step == a.steps - 1:
            acc = float((logits.argmax(1) == torch.from_numpy(y)).float().mean())
            print(f"step {step:4d}  loss {np.mean(losses[-10:]):.3f}  batch acc {acc:.2f}  {time.time() - t0:.0f}s",
                  flush=True)

    # Re-estimate BN running statistics at the evaluation size (cumulative average over the passes).
    brng = np.random.default_rng(BN_SEED)
    for mod in model.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.reset_running_stats()
            mod.momentum = None
    with torch.no_grad():
        for _ in range(8):
            xb, _ = batch(8, 224, brng)
            model(torch.from_numpy(xb))
    model.eval()

    hrng = np.random.default_rng(HELDOUT_SEED)
    labels = np.arange(a.heldout) % CLASSES
    x, y = batch(a.heldout, 224, hrng, labels=labels)
    with torch.no_grad():
        logits = torch.cat([model(torch.from_numpy(x[i:i + 8])) for i in range(0, a.heldout, 8)]).numpy()
    logits = logits.astype(np.float32)
    top = np.sort(logits, axis=1)
    prob = np.exp(logits - logits.max(1, keepdims=True))
    prob /= prob.sum(1, keepdims=True)
    stats = {
        "heldout_accuracy": float((logits.argmax(1) == y).mean()),
        "top1_top2_logit_gap_min": float(np.min(top[:, -1] - top[:, -2])),
        "top1_top2_logit_gap_median": float(np.median(top[:, -1] - top[:, -2])),
        "top1_probability_median": float(np.median(prob.max(1))),
        "distinct_top1_classes": int(len(set(logits.argmax(1).tolist()))),
    }
    print(json.dumps(stats, indent=1))

    torch.save(model.state_dict(), out / "resnet50.pth")
    np.savez(out / "io.npz", input=x, output=logits, layout=np.array("NCHW"), labels=y)
    manifest = {
        "generator": "tools/make_trained_resnet50.py",
        "torch_version": torch.__version__,
        "torchvision_version": torchvision.__version__,
        "numpy_version": np.__version__,
        "model": "torchvision.models.resnet.resnet50(num_classes=100, zero_init_residual=True)",
        "task": "synthetic: class = hue index (10) x pattern (10); see the script header",
        "seeds": {"train": TRAIN_SEED, "bn_recalibration": BN_SEED, "heldout": HELDOUT_SEED},
        "steps": a.steps, "batch": a.batch, "train_size": a.train_size,
        "optimizer": "AdamW lr 2e-3 wd 1e-4, linear warm-up then cosine",
        "final_train_loss_mean_last10": float(np.mean(losses[-10:])),
        "bn_recalibration": "8 batches of 8 at 224x224, train-mode forward, cumulative average",
        "heldout": {"count": a.heldout, "size": 224, **stats},
        "notes": [note] if note else [],
        "train_seconds": round(time.time() - t0),
    }
    (out / "MANIFEST.json").write_text(json.dumps(manifest, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
