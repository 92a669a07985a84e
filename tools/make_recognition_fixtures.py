#!/usr/bin/env python3
"""Writes fixtures/recognition/: small PyTorch ResNets in layouts no naming table lists, with goldens.

Each fixture is a tiny model (widths 2–64, one to three blocks per stage) in one of the layouts the
structure recovery has to cover: pre-activation blocks, option-A shortcuts split either way, avg-pool
shortcuts, projections with bias or with a 3×3 kernel, ResNet-D/-T stems of the real timm, deep stems,
bottlenecks with the stride on either conv, uneven stages, heads with flatten/dropout, the real HF
transformers ResNet, a torchvision-named CIFAR port (the trap), and the containers such models come in
(kuangliu, timm, Lightning, pytorch/examples, whole pickled module, torch.compile).

Environment (pinned in tools/requirements-recognition-fixtures.txt), outside the repository:

    python3.11 -m venv venv-torch
    venv-torch/bin/pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
    venv-torch/bin/pip install --no-deps -r tools/requirements-recognition-fixtures.txt

Never import tensorflow in the same process. torchvision is imported through tools/torchvision_shim.py
(its compiled ops are not needed; see tools/make_torch_fixtures.py).

Weights. Random weights carry no evidence about how a model is wired, and the goldens-free plausibility
check compares BatchNorm batch statistics with running statistics, so every BatchNorm here is
*calibrated*: weights are drawn at random (conv N(0, 2/fan_in), conv bias N(0, 0.1²), BN gamma
U(0.5, 1.5), beta N(0, 0.2²), linear N(0, 1/in)), then with momentum=None (cumulative average) the model
runs in train mode under no_grad over CALIB_BATCHES batches of synthetic natural-looking images
(`natural_images`), and is put back in eval mode. The running statistics are then those of the model's
own activations on image-like inputs, as in a trained model.

Synthetic images (`natural_images`): per image a luminance field of 1/f^a noise (a ∈ [0.9, 1.3], the amplitude spectrum of photographs, random
phases, the DC term dropped) plus two to four low-frequency sinusoids, plus one to three random straight
edges (a half-plane step of random height, softened over one pixel); each colour channel is that
luminance times a per-image gain near 1 plus a weaker, smoother chroma field of its own, so the channels
are strongly correlated as in photographs. The batch is then standardised per channel (mean 0, std 1),
as `transforms.Normalize` output roughly is.

Goldens: io.npz holds `input` = numpy.random.default_rng(20240601).standard_normal((2, 3, H, W)) float32,
`output` = model.eval()(input) float32 (logits, or what the model's head returns), `layout` = 'NCHW';
two fixtures also carry `layer:<module name>` activations hooked on the framework's own module names.
Every written file is reloaded (weights_only=True where the container allows it; strict=True into a
fresh model) and must reproduce the golden bit for bit; MANIFEST.json records that check.

Deterministic: fixed seeds, one intra-op thread, npz members with a fixed timestamp; two runs give
identical bytes.

Usage:  python tools/make_recognition_fixtures.py [--out DIR]
"""
import argparse
import copy
import hashlib
import io
import json
import math
import os
import shutil
import sys
import tempfile
import warnings
import zipfile
from collections import OrderedDict

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torchvision_shim import import_torchvision  # noqa: E402

torchvision, tv_resnet, TV_NOTE = import_torchvision()

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "fixtures", "recognition")
INPUT_SEED = 20240601
ZIP_TIME = (1980, 1, 1, 0, 0, 0)
CALIB_BATCHES = 20
CALIB_BATCH_SIZE = 16


# ---------------------------------------------------------------- synthetic images and calibration

def natural_images(rng, n, size):
    """n images (n, 3, size, size) float32 that look like photographs to a BatchNorm: see the header."""
    fy = np.fft.fftfreq(size)[:, None]
    fx = np.fft.fftfreq(size)[None, :]
    f = np.sqrt(fx ** 2 + fy ** 2)
    f[0, 0] = 1.0
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) / size

    def pink(alpha):
        spec = (rng.standard_normal((size, size)) + 1j * rng.standard_normal((size, size))) / f ** alpha
        spec[0, 0] = 0.0
        field = np.real(np.fft.ifft2(spec))
        return field / (field.std() + 1e-12)

    out = np.empty((n, 3, size, size), np.float64)
    for i in range(n):
        lum = pink(rng.uniform(0.9, 1.3))
        for _ in range(rng.integers(2, 5)):
            kx, ky = rng.uniform(-3, 3, 2)
            lum += rng.uniform(0.2, 0.8) * np.sin(2 * np.pi * (kx * xx + ky * yy) + rng.uniform(0, 2 * np.pi))
        for _ in range(rng.integers(1, 4)):
            theta = rng.uniform(0, np.pi)
            d = np.cos(theta) * (xx - rng.uniform(0.2, 0.8)) + np.sin(theta) * (yy - rng.uniform(0.2, 0.8))
            lum += rng.uniform(-1.5, 1.5) * np.clip(d * size + 0.5, 0.0, 1.0)
        lum = (lum - lum.mean()) / (lum.std() + 1e-12)
        brightness, contrast = rng.uniform(-0.5, 0.5), rng.uniform(0.6, 1.4)
        for c in range(3):
            out[i, c] = brightness + contrast * rng.uniform(0.8, 1.2) * lum + 0.3 * pink(1.6)
    mean = out.mean(axis=(0, 2, 3), keepdims=True)
    std = out.std(axis=(0, 2, 3), keepdims=True)
    return ((out - mean) / std).astype(np.float32)


def randomize(model, seed):
    """Random weights (see the header) so that no layer is identity-like; BN statistics come from calibrate."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                fan_in = m.weight.shape[1] * m.weight.shape[2] * m.weight.shape[3]
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * math.sqrt(2.0 / fan_in))
                if m.bias is not None:
                    m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
            elif isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                m.weight.copy_(torch.rand(c, generator=g) + 0.5)
                m.bias.copy_(torch.randn(c, generator=g) * 0.2)
            elif isinstance(m, nn.Linear):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) / math.sqrt(m.weight.shape[1]))
                if m.bias is not None:
                    m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
    return model


def calibrate(model, size, seed, forward=None):
    """Running statistics = cumulative averages over synthetic natural-looking images (train mode, no_grad)."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    rng = np.random.default_rng(seed)
    model.train()
    with torch.no_grad():
        for _ in range(CALIB_BATCHES):
            x = torch.from_numpy(natural_images(rng, CALIB_BATCH_SIZE, size))
            (forward or model)(x)
    for m, mom in zip(bns, saved):
        m.momentum = mom
    return model.eval()


def prepare(model, seed, size):
    torch.manual_seed(seed)
    randomize(model, seed)
    return calibrate(model, size, seed + 1)


# ---------------------------------------------------------------- models written here

class PreActBlock(nn.Module):
    """kuangliu PreActBlock: BN-ReLU-conv twice; the projection (1×1 conv) reads the pre-activated input."""

    def __init__(self, cin, planes, stride):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        if stride != 1 or cin != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, planes, 1, stride, bias=False))

    def forward(self, x):
        out = F.relu(self.bn1(x))
        shortcut = self.shortcut(out) if hasattr(self, "shortcut") else x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + shortcut


class PreActResNet(nn.Module):
    """kuangliu-style PreActResNet with a final BN + ReLU before avg_pool2d(4) and `linear`."""

    def __init__(self, layers=(1, 1, 1, 1), widths=(4, 8, 16, 32), num_classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
        cin = widths[0]
        for i, (n, w) in enumerate(zip(layers, widths)):
            blocks = []
            for j in range(n):
                blocks.append(PreActBlock(cin, w, (1 if i == 0 else 2) if j == 0 else 1))
                cin = w
            setattr(self, "layer%d" % (i + 1), nn.Sequential(*blocks))
        self.bn = nn.BatchNorm2d(cin)
        self.linear = nn.Linear(cin, num_classes)

    def forward(self, x):
        out = self.conv1(x)
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        out = F.relu(self.bn(out))
        out = F.avg_pool2d(out, 4)
        return self.linear(out.view(out.size(0), -1))


class TutorialPreActBlock(nn.Module):
    """Pre-activation block in Sequential form: `net` = BN, ReLU, conv, BN, ReLU, conv; projection BN, ReLU, 1×1."""

    def __init__(self, cin, cout, subsample):
        super().__init__()
        self.net = nn.Sequential(
            nn.BatchNorm2d(cin), nn.ReLU(), nn.Conv2d(cin, cout, 3, 2 if subsample else 1, 1, bias=False),
            nn.BatchNorm2d(cout), nn.ReLU(), nn.Conv2d(cout, cout, 3, 1, 1, bias=False))
        self.downsample = nn.Sequential(nn.BatchNorm2d(cin), nn.ReLU(), nn.Conv2d(cin, cout, 1, 2, bias=False)) \
            if subsample else None

    def forward(self, x):
        z = self.net(x)
        if self.downsample is not None:
            x = self.downsample(x)
        return z + x


class TutorialPreActResNet(nn.Module):
    """Bare 3×3 stem conv, flat `blocks.N`, no final BN/ReLU; head pool → flatten → Linear (`output_net.2`)."""

    def __init__(self, num_blocks=(2, 1, 1), widths=(4, 8, 16), num_classes=10):
        super().__init__()
        self.input_net = nn.Sequential(nn.Conv2d(3, widths[0], 3, padding=1, bias=False))
        blocks = []
        for s, n in enumerate(num_blocks):
            for b in range(n):
                subsample = b == 0 and s > 0
                blocks.append(TutorialPreActBlock(widths[s - 1] if subsample else widths[s], widths[s], subsample))
        self.blocks = nn.Sequential(*blocks)
        self.output_net = nn.Sequential(nn.AdaptiveAvgPool2d((1, 1)), nn.Flatten(), nn.Linear(widths[-1], num_classes))

    def forward(self, x):
        return self.output_net(self.blocks(self.input_net(x)))


class SplitAfterBlock(nn.Module):
    """Post-activation basic block; option A shortcut: x[:, :, ::2, ::2], then all new zero channels AFTER."""

    def __init__(self, cin, planes, stride):
        super().__init__()
        self.conv_a = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
        self.bn_a = nn.BatchNorm2d(planes)
        self.conv_b = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn_b = nn.BatchNorm2d(planes)
        self.stride, self.extra = stride, planes - cin

    def forward(self, x):
        y = F.relu(self.bn_a(self.conv_a(x)))
        y = self.bn_b(self.conv_b(y))
        if self.stride != 1 or self.extra:
            x = x[:, :, ::self.stride, ::self.stride]
            x = F.pad(x, (0, 0, 0, 0, 0, self.extra))
        return F.relu(x + y)


class SplitAfterNet(nn.Module):
    def __init__(self, layers=(1, 2, 1), widths=(4, 8, 16), num_classes=10):
        super().__init__()
        self.conv = nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
        self.bn = nn.BatchNorm2d(widths[0])
        cin, stages = widths[0], []
        for s, (n, w) in enumerate(zip(layers, widths)):
            blocks = []
            for b in range(n):
                blocks.append(SplitAfterBlock(cin, w, 2 if (b == 0 and s > 0) else 1))
                cin = w
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.classifier = nn.Linear(cin, num_classes)

    def forward(self, x):
        x = self.stages(F.relu(self.bn(self.conv(x))))
        return self.classifier(F.adaptive_avg_pool2d(x, 1).flatten(1))


class PostBlock(nn.Module):
    """Post-activation basic block (conv-BN-ReLU, conv-BN, add, ReLU) with a choice of shortcut.

    shortcut: 'identity', 'optionA' (subsample + zero channels, split before/after), 'avgpool' (avg_pool2d(2) +
    zero channels before/after), 'conv1x1-bias' (1×1 stride-2 conv with bias, no BN, module `shortcut`),
    'conv3x3-bn' (3×3 stride-2 conv + BN, `downsample.0/.1`), 'conv1x1-bn' (1×1 conv + BN, `downsample.0/.1`).
    """

    def __init__(self, cin, planes, stride, shortcut, conv_bias=False):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=conv_bias)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=conv_bias)
        self.bn2 = nn.BatchNorm2d(planes)
        self.kind = shortcut if (stride != 1 or cin != planes) else "identity"
        self.stride, self.extra = stride, planes - cin
        if self.kind == "conv1x1-bias":
            self.shortcut = nn.Conv2d(cin, planes, 1, stride, bias=True)
        elif self.kind == "conv3x3-bn":
            self.downsample = nn.Sequential(nn.Conv2d(cin, planes, 3, stride, 1, bias=False), nn.BatchNorm2d(planes))
        elif self.kind == "conv1x1-bn":
            self.downsample = nn.Sequential(nn.Conv2d(cin, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        if self.kind == "conv1x1-bias":
            x = self.shortcut(x)
        elif self.kind in ("conv3x3-bn", "conv1x1-bn"):
            x = self.downsample(x)
        elif self.kind == "optionA":
            x = F.pad(x[:, :, ::self.stride, ::self.stride], (0, 0, 0, 0, self.extra // 2, self.extra - self.extra // 2))
        elif self.kind == "avgpool":
            x = F.avg_pool2d(x, 2) if self.stride == 2 else x
            x = F.pad(x, (0, 0, 0, 0, self.extra // 2, self.extra - self.extra // 2))
        return F.relu(x + y)


class CifarPost(nn.Module):
    """CIFAR stem (3×3 stride-1 conv + BN + ReLU, `conv1`/`bn1`), stages `layerS`, global pool, `head_name`."""

    def __init__(self, layers, widths, shortcut, num_classes=10, head_name="linear", conv_bias=False, head=None):
        super().__init__()
        self.conv1 = nn.Conv2d(3, widths[0], 3, 1, 1, bias=conv_bias)
        self.bn1 = nn.BatchNorm2d(widths[0])
        cin = widths[0]
        for s, (n, w) in enumerate(zip(layers, widths)):
            blocks = []
            for b in range(n):
                blocks.append(PostBlock(cin, w, 2 if (b == 0 and s > 0) else 1, shortcut, conv_bias))
                cin = w
            setattr(self, "layer%d" % (s + 1), nn.Sequential(*blocks))
        self.nstages = len(layers)
        self.head_kind = head
        if head == "pool-flatten-dropout":
            self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.25), nn.Linear(cin, num_classes))
        elif head == "avgpool4-flatten":
            self.avgpool = nn.AvgPool2d(4)
            self.flatten = nn.Flatten()
            self.fc = nn.Linear(cin, num_classes)
        else:
            self.head_name = head_name
            setattr(self, head_name, nn.Linear(cin, num_classes))

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        for s in range(self.nstages):
            x = getattr(self, "layer%d" % (s + 1))(x)
        if self.head_kind == "pool-flatten-dropout":
            return self.head(x)
        if self.head_kind == "avgpool4-flatten":
            return self.fc(self.flatten(self.avgpool(x)))
        return getattr(self, self.head_name)(F.adaptive_avg_pool2d(x, 1).flatten(1))


class BottleneckV1(nn.Module):
    """Original ResNet v1 bottleneck: the stride is on the first 1×1 conv (torchvision names)."""
    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, stride, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        return self.relu(out + identity)


class BottleneckNet(nn.Module):
    """ImageNet-style bottleneck ResNet with torchvision stage/block names and a 7×7 or a 3-conv deep stem.

    deep stem (`stem.0…8`): 3×3 s2 conv (w/2) BN ReLU, 3×3 conv (w/2) BN ReLU, 3×3 conv (w) BN ReLU; then maxpool.
    """

    def __init__(self, block, layers, planes, stem, stem_width=8, num_classes=5):
        super().__init__()
        if stem == "deep":
            h = stem_width // 2
            self.stem = nn.Sequential(
                nn.Conv2d(3, h, 3, 2, 1, bias=False), nn.BatchNorm2d(h), nn.ReLU(inplace=True),
                nn.Conv2d(h, h, 3, 1, 1, bias=False), nn.BatchNorm2d(h), nn.ReLU(inplace=True),
                nn.Conv2d(h, stem_width, 3, 1, 1, bias=False), nn.BatchNorm2d(stem_width), nn.ReLU(inplace=True))
        else:
            self.stem = None
            self.conv1 = nn.Conv2d(3, stem_width, 7, 2, 3, bias=False)
            self.bn1 = nn.BatchNorm2d(stem_width)
            self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.inplanes = stem_width
        for s, (n, p) in enumerate(zip(layers, planes)):
            stride = 1 if s == 0 else 2
            down = None
            if stride != 1 or self.inplanes != p * 4:
                down = nn.Sequential(nn.Conv2d(self.inplanes, p * 4, 1, stride, bias=False), nn.BatchNorm2d(p * 4))
            blocks = [block(self.inplanes, p, stride, down)]
            self.inplanes = p * 4
            blocks += [block(self.inplanes, p) for _ in range(1, n)]
            setattr(self, "layer%d" % (s + 1), nn.Sequential(*blocks))
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(self.inplanes, num_classes)

    def forward(self, x):
        x = self.stem(x) if self.stem is not None else self.relu(self.bn1(self.conv1(x)))
        x = self.maxpool(x)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class Resnet8Block(nn.Module):
    """EEMBC/MLPerf-Tiny ResNet-8 stack: conv-BN-ReLU, conv-BN, (1×1 conv with bias, no BN), add, ReLU."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Conv2d(cin, cout, 1, stride) if stride != 1 or cin != cout else None
        self.relu2 = nn.ReLU()

    def forward(self, x):
        y = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        if self.shortcut is not None:
            x = self.shortcut(x)
        return self.relu2(x + y)


class ResNet8(nn.Module):
    """ResNet-8 v1 (EEMBC): 16/32/64 filters, conv bias, AvgPool2d(8), Flatten, Linear, Softmax."""

    def __init__(self, num_classes=10):
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, 1, 1)
        self.bn = nn.BatchNorm2d(16)
        self.relu = nn.ReLU()
        self.stack1 = Resnet8Block(16, 16, 1)
        self.stack2 = Resnet8Block(16, 32, 2)
        self.stack3 = Resnet8Block(32, 64, 2)
        self.pool = nn.AvgPool2d(8)
        self.flatten = nn.Flatten()
        self.dense = nn.Linear(64, num_classes)
        self.softmax = nn.Softmax(dim=1)

    def forward(self, x):
        x = self.relu(self.bn(self.conv(x)))
        x = self.stack3(self.stack2(self.stack1(x)))
        return self.softmax(self.dense(self.flatten(self.pool(x))))


def tv_mini(block, layers, base, num_classes, cifar_stem=False):
    """torchvision's own ResNet class and blocks at widths base·(1, 2, 4, 8).

    As in tools/make_torch_fixtures.py, a throw-away subclass rescales the planes; conv1/bn1/fc are replaced
    in place so the key order is torchvision's. cifar_stem: conv1 = 3×3 stride-1 conv WITH bias and the
    max pool replaced by nn.Identity (how CIFAR ports of torchvision's ResNet do it).
    """
    class Rescaled(tv_resnet.ResNet):
        def _make_layer(self, block, planes, blocks, stride=1, dilate=False):
            if planes == 64:
                self.inplanes = base
            return super()._make_layer(block, planes * base // 64, blocks, stride, dilate)

    model = Rescaled(block, layers, num_classes=num_classes)
    if cifar_stem:
        model.conv1 = nn.Conv2d(3, base, kernel_size=3, stride=1, padding=1, bias=True)
        model.maxpool = nn.Identity()
    else:
        model.conv1 = nn.Conv2d(3, base, kernel_size=7, stride=2, padding=3, bias=False)
    model.bn1 = nn.BatchNorm2d(base)
    model.fc = nn.Linear(base * 8 * block.expansion, num_classes)
    model.__class__ = tv_resnet.ResNet
    return model


# ---------------------------------------------------------------- files

def make_input(size):
    return np.random.default_rng(INPUT_SEED).standard_normal((2, 3, size, size)).astype(np.float32)


def run(model, x, forward=None):
    with torch.no_grad():
        model.eval()
        y = (forward or model)(torch.from_numpy(x)).float().numpy()
    if not np.all(np.isfinite(y)) or np.array_equal(y[0], y[1]):
        raise SystemExit("degenerate output")
    return y.astype(np.float32)


def write_npz(path, arrays):
    """np.savez_compressed without the wall-clock timestamps, so reruns give identical bytes.

    Deflated (level 6) rather than stored: it keeps the folder within its size budget (ReLU outputs in the
    layer goldens compress well), and readers of np.savez_compressed files read these.
    """
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=6) as z:
        for name, arr in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.asanyarray(arr), allow_pickle=False)
            info = zipfile.ZipInfo(name + ".npy", date_time=ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, buf.getvalue())


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def strip(prefix):
    return lambda sd: OrderedDict((k[len(prefix):], v) for k, v in sd.items())


def require_same(path, got, want):
    if not np.array_equal(got, want):
        raise SystemExit("%s: reloaded output differs from its golden by %g" % (path, np.abs(got - want).max()))


def bn_stats_summary(model):
    """How far the calibrated running statistics are from BN's initial (0, 1): evidence they are not default."""
    means = [float(m.running_mean.abs().mean()) for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    vars_ = [float(m.running_var.mean()) for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    return {"bn_layers": len(means), "mean_abs_running_mean": round(float(np.mean(means)), 4) if means else None,
            "mean_running_var": round(float(np.mean(vars_)), 4) if vars_ else None}


class Fixtures:
    def __init__(self, out):
        self.out = out
        self.entries = []

    def folder(self, name):
        path = os.path.join(self.out, name)
        os.makedirs(path, exist_ok=True)
        return path

    def golden(self, name, x, y, layers=None):
        arrays = OrderedDict([("input", x), ("output", y), ("layout", np.array("NCHW"))])
        for k, v in (layers or {}).items():
            arrays["layer:" + k] = v
        write_npz(os.path.join(self.folder(name), "io.npz"), arrays)

    def add(self, name, files, x, y, structure, made_by, model=None, layers=None, golden=None, **extra):
        entry = OrderedDict([("name", name), ("golden", golden or name + "/io.npz"), ("input_shape", list(x.shape)),
                             ("output_shape", list(y.shape)), ("output_is", extra.pop("output_is", "logits"))])
        if layers:
            entry["layer_goldens"] = sorted("layer:" + k for k in layers)
        entry["files"] = []
        for f in files:
            path = os.path.join(self.out, f["path"])
            e = OrderedDict([("path", f["path"]), ("size", os.path.getsize(path)), ("sha256", sha256(path))])
            e.update((k, v) for k, v in f.items() if k != "path")
            entry["files"].append(e)
        entry["structure"] = structure
        entry["made_by"] = made_by
        if model is not None:
            entry["bn_calibration"] = bn_stats_summary(model)
        entry.update(extra)
        self.entries.append(entry)


def structure(words, stem, block, stride_on, shortcut, post_add_relu, final_bn, head, blocks_per_stage, widths,
              **more):
    s = OrderedDict([("words", words), ("stem", stem), ("block", block), ("stride_on", stride_on),
                     ("shortcut", shortcut), ("post_add_relu", post_add_relu), ("final_bn", final_bn),
                     ("head", head), ("blocks_per_stage", list(blocks_per_stage)), ("widths", list(widths))])
    s.update(more)
    return s


CIFAR_STEM = OrderedDict([("kernel", 3), ("stride", 1), ("padding", 1), ("bias", False), ("bn", True),
                          ("relu", True), ("maxpool", False)])
TV_STEM = OrderedDict([("kernel", 7), ("stride", 2), ("padding", 3), ("bias", False), ("bn", True), ("relu", True),
                       ("maxpool", OrderedDict([("kernel", 3), ("stride", 2), ("padding", 1)]))])
GAP_HEAD = OrderedDict([("pool", "global average"), ("flatten", False), ("dropout", False), ("softmax", False)])


def head(pool="global average", flatten=False, dropout=False, softmax=False, **more):
    h = OrderedDict([("pool", pool), ("flatten", flatten), ("dropout", dropout), ("softmax", softmax)])
    h.update(more)
    return h


def save_and_check_sd(fx, name, filename, obj, builder, x, y, unwrap=lambda o: o, safe=(), forward=None,
                      **fields):
    """torch.save(obj), reload with weights_only=True, unwrap to the state dict, strict load, same output."""
    path = os.path.join(fx.folder(name), filename)
    torch.save(obj, path)
    with torch.serialization.safe_globals(list(safe)):
        loaded = torch.load(path, weights_only=True)
    model = builder()
    model.load_state_dict(unwrap(loaded), strict=True)
    require_same(path, run(model, x, forward and (lambda t: forward(model, t))), y)
    f = OrderedDict([("path", "%s/%s" % (name, filename))])
    f.update(fields)
    f["reload_check"] = ("torch.load(weights_only=True%s), load_state_dict(strict=True) into a fresh model: output "
                         "identical to the golden" % (", safe_globals=[%s]" % ", ".join(
                             "%s.%s" % (c.__module__, c.__qualname__) for c in safe) if safe else ""))
    return f


# ---------------------------------------------------------------- the fixtures

def simple(fx, name, builder, size, seed, struct, made_by, filename="model.pth", wrap=None, unwrap=None,
           key_prefix="", wrapper="state_dict", notes=None, layers_hook=None):
    torch.manual_seed(seed)
    model = prepare(builder(), seed, size)
    x = make_input(size)
    y = run(model, x)
    layers = layers_hook(model, x) if layers_hook else None
    fx.golden(name, x, y, layers)
    sd = model.state_dict()
    obj = wrap(model, sd) if wrap else sd
    f = save_and_check_sd(fx, name, filename, obj, builder, x, y, unwrap or (lambda o: o),
                          container="torch zip", wrapper=wrapper, key_prefix=key_prefix)
    fx.add(name, [f], x, y, struct, made_by, model=model, layers=layers, notes=notes or [])
    return model


def hook_layers(model, x, names):
    captured = OrderedDict()
    mods = dict(model.named_modules())
    handles = []
    for n in names:
        def hook(_m, _i, out, n=n):
            out = out.logits if hasattr(out, "logits") else out
            out = out.pooler_output if hasattr(out, "pooler_output") else out
            out = out.last_hidden_state if hasattr(out, "last_hidden_state") else out
            captured[n] = out.detach().float().numpy().astype(np.float32)
        handles.append(mods[n].register_forward_hook(hook))
    with torch.no_grad():
        model.eval()(torch.from_numpy(x))
    for h in handles:
        h.remove()
    return OrderedDict((n, captured[n]) for n in names)


def make_all(out):
    fx = Fixtures(out)
    made = "own nn.Module definitions in tools/make_recognition_fixtures.py, randomised + BN-calibrated, torch %s" \
        % torch.__version__

    # 1. kuangliu PreActResNet with final BN, saved as kuangliu's checkpoint dict.
    simple(fx, "pre-act", lambda: PreActResNet((1, 1, 1, 1), (4, 8, 16, 32), 10), 32, 1001,
           structure("kuangliu PreActResNet: 3x3 s1 stem conv (no BN), pre-activation basic blocks (BN-ReLU-conv, "
                     "BN-ReLU-conv, add, no ReLU after add); projection = 1x1 conv (no BN, no bias) applied to the "
                     "block's pre-activated input relu(bn1(x)); final BN + ReLU, avg_pool2d(4) on the 4x4 map, "
                     "view, `linear`",
                     OrderedDict([("kernel", 3), ("stride", 1), ("padding", 1), ("bias", False), ("bn", False),
                                  ("relu", False), ("maxpool", False)]),
                     "preact", "conv1 (3x3)", "1x1 conv on relu(bn1(x)) where shape changes, else identity x",
                     False, True, head(pool="avg_pool2d(4) = global on 4x4", flatten=True),
                     (1, 1, 1, 1), (4, 8, 16, 32)),
           made, filename="ckpt.pth", wrap=lambda m, sd: {"net": sd, "acc": 93.1, "epoch": 199},
           unwrap=lambda o: o["net"], wrapper="{'net', 'acc', 'epoch'} (kuangliu)")

    # 2. pre-activation, no final BN, projection BN-ReLU-1x1 conv, flat blocks.N.
    simple(fx, "preact-no-final-bn", lambda: TutorialPreActResNet((2, 1, 1), (4, 8, 16), 10), 32, 1002,
           structure("pre-activation ResNet (UvA tutorial style): stem a bare 3x3 conv `input_net.0`; flat "
                     "`blocks.N`, each `net` = BN, ReLU, conv(stride), BN, ReLU, conv; out = net(x) + downsample(x), "
                     "no ReLU after the add; projection `downsample` = BN, ReLU, 1x1 stride-2 conv (no bias); NO "
                     "final BN/ReLU; output_net = AdaptiveAvgPool2d, Flatten, Linear (`output_net.2`)",
                     OrderedDict([("kernel", 3), ("stride", 1), ("padding", 1), ("bias", False), ("bn", False),
                                  ("relu", False), ("maxpool", False)]),
                     "preact", "net.2 (first 3x3)", "BN-ReLU-1x1 conv stride 2 (own BN, reads x, not the block's "
                     "pre-activation)", False, False, head(flatten=True), (2, 1, 1), (4, 8, 16)),
           made)

    # 3. option A, zero channels all after.
    simple(fx, "option-a-split-after", lambda: SplitAfterNet((1, 2, 1), (4, 8, 16), 10), 32, 1003,
           structure("CIFAR ResNet, stem `conv`/`bn` (3x3 s1, ReLU); `stages.S.B.conv_a/bn_a/conv_b/bn_b` "
                     "post-activation basic blocks; option A shortcut x[:, :, ::2, ::2] then ALL new zero "
                     "channels appended after the existing ones (split 0/ C); global average pool; `classifier`",
                     CIFAR_STEM, "basic", "conv_a", "option A: subsample ::2, zero channels after (0 before, "
                     "planes-cin after)", True, False, GAP_HEAD, (1, 2, 1), (4, 8, 16),
                     option_a_split=OrderedDict([("before", 0), ("after", "planes - cin")])),
           made)

    # 4. avg_pool2d(2) + zero channels.
    simple(fx, "avgpool-zeropad", lambda: CifarPost((1, 1, 1), (4, 8, 16), "avgpool", 10, head_name="fc",
                                                    conv_bias=True), 32, 1004,
           structure("CIFAR ResNet, all convs with bias; post-activation basic blocks; shortcut avg_pool2d(2, 2) "
                     "then zero channels split half before / half after; global average pool; `fc`",
                     OrderedDict(CIFAR_STEM, bias=True), "basic", "conv1", "avg_pool2d(kernel 2, stride 2) then "
                     "zero channels (extra//2 before, rest after)", True, False, GAP_HEAD, (1, 1, 1), (4, 8, 16),
                     conv_bias=True, option_a_split=OrderedDict([("before", "(planes-cin)//2"),
                                                                 ("after", "planes-cin-(planes-cin)//2")])),
           made)

    # 5. 1x1 stride-2 projection with bias, no BN.
    simple(fx, "proj-1x1-bias-nobn", lambda: CifarPost((1, 1, 1), (4, 8, 16), "conv1x1-bias", 10, head_name="fc"),
           32, 1005,
           structure("CIFAR ResNet, post-activation basic blocks; projection `layerS.0.shortcut` = a bare 1x1 "
                     "stride-2 Conv2d WITH bias and NO BN (keys `shortcut.weight`, `shortcut.bias`); global "
                     "average pool; `fc`", CIFAR_STEM, "basic", "conv1", "1x1 conv stride 2, bias, no BN", True,
                     False, GAP_HEAD, (1, 1, 1), (4, 8, 16)),
           made)

    # 6. 3x3 stride-2 projection + BN.
    simple(fx, "proj-3x3-s2", lambda: CifarPost((1, 1, 1), (4, 8, 16), "conv3x3-bn", 10, head_name="linear"),
           32, 1006,
           structure("CIFAR ResNet, post-activation basic blocks; projection `layerS.0.downsample` = 3x3 stride-2 "
                     "conv (padding 1, no bias) + BN; global average pool; `linear`", CIFAR_STEM, "basic", "conv1",
                     "3x3 conv stride 2 padding 1 + BN", True, False, GAP_HEAD, (1, 1, 1), (4, 8, 16)),
           made)

    # 7. timm ResNet-D and ResNet-T.
    make_timm(fx)

    # 8. bottlenecks.
    simple(fx, "deep-stem-bottleneck",
           lambda: BottleneckNet(tv_resnet.Bottleneck, (1, 1, 1, 1), (2, 4, 4, 4), "deep", 8, 5), 64, 1008,
           structure("ImageNet-style bottleneck ResNet: deep stem `stem.0..8` = 3x3 s2 conv(4) BN ReLU, 3x3 conv(4) "
                     "BN ReLU, 3x3 conv(8) BN ReLU, then MaxPool(3, 2, 1); torchvision Bottleneck blocks (v1.5: "
                     "stride on the 3x3 conv2), projection 1x1 conv + BN `downsample.0/.1`; AdaptiveAvgPool, "
                     "flatten, `fc`",
                     OrderedDict([("deep", [OrderedDict([("kernel", 3), ("stride", 2), ("out", 4)]),
                                            OrderedDict([("kernel", 3), ("stride", 1), ("out", 4)]),
                                            OrderedDict([("kernel", 3), ("stride", 1), ("out", 8)])]),
                                  ("bias", False), ("bn", True), ("relu", True),
                                  ("maxpool", OrderedDict([("kernel", 3), ("stride", 2), ("padding", 1)]))]),
                     "bottleneck", "conv2 (3x3), v1.5", "1x1 conv (stride) + BN", True, False,
                     head(flatten=True), (1, 1, 1, 1), (8, 16, 16, 16), planes=[2, 4, 4, 4], expansion=4),
           made + "; blocks are torchvision.models.resnet.Bottleneck")
    simple(fx, "bottleneck-v1",
           lambda: BottleneckNet(BottleneckV1, (1, 1, 1, 1), (2, 4, 4, 4), "7x7", 8, 5), 64, 1009,
           structure("ImageNet-style bottleneck ResNet, torchvision names and stem (7x7 s2 conv, BN, ReLU, "
                     "MaxPool(3, 2, 1)); ORIGINAL v1 bottleneck: the stride is on the first 1x1 conv (conv1), "
                     "the 3x3 conv2 has stride 1; projection 1x1 conv + BN `downsample.0/.1`; `fc`",
                     TV_STEM, "bottleneck", "conv1 (first 1x1), v1", "1x1 conv (stride) + BN", True, False,
                     head(flatten=True), (1, 1, 1, 1), (8, 16, 16, 16), planes=[2, 4, 4, 4], expansion=4),
           made)

    # 9. uneven stages.
    simple(fx, "uneven-stages", lambda: CifarPost((3, 3, 1), (4, 8, 16), "optionA", 10, head_name="linear"),
           32, 1010,
           structure("CIFAR ResNet with stages [3, 3, 1] (a pruned ResNet-56 [9, 9, 1] in miniature), akamaster "
                     "names conv1/bn1/layerS.B/linear, option A shortcut (::2 + zero channels split half/half)",
                     CIFAR_STEM, "basic", "conv1", "option A, zero channels half before / half after", True, False,
                     GAP_HEAD, (3, 3, 1), (4, 8, 16),
                     option_a_split=OrderedDict([("before", "(planes-cin)//2"), ("after", "planes-cin-(planes-cin)//2")])),
           made)

    # 10. heads.
    simple(fx, "head-flatten-dropout",
           lambda: CifarPost((1, 1, 1), (4, 8, 16), "conv1x1-bn", 10, head="pool-flatten-dropout"), 32, 1011,
           structure("CIFAR ResNet, post-activation, projection 1x1 conv + BN `downsample.0/.1`; head `head` = "
                     "Sequential(AdaptiveAvgPool2d(1), Flatten, Dropout(0.25), Linear) (Linear key `head.3`)",
                     CIFAR_STEM, "basic", "conv1", "1x1 conv stride 2 + BN", True, False,
                     head(flatten=True, dropout=0.25, linear="head.3"), (1, 1, 1), (4, 8, 16)),
           made)
    simple(fx, "head-avgpool4-flatten",
           lambda: CifarPost((1, 1, 1, 1), (4, 8, 8, 16), "conv1x1-bn", 10, head="avgpool4-flatten"), 32, 1012,
           structure("CIFAR ResNet with four stages (32 → 4x4), post-activation, projection 1x1 conv + BN; head "
                     "`avgpool` = AvgPool2d(4) on the 4x4 map (= global average), `flatten` = nn.Flatten, `fc`",
                     CIFAR_STEM, "basic", "conv1", "1x1 conv stride 2 + BN (also stage 3, 8→8 at stride 2)", True,
                     False, head(pool="AvgPool2d(4) = global on 4x4", flatten=True), (1, 1, 1, 1), (4, 8, 8, 16)),
           made)

    # 11. HF transformers.
    make_hf(fx)

    # 12. torchvision names, CIFAR stem: the trap. Per-layer goldens on torchvision's module names.
    tv_names = ["relu", "maxpool", "layer1", "layer2", "layer3", "layer4", "avgpool", "fc"]
    simple(fx, "tv-names-cifar-stem",
           lambda: tv_mini(tv_resnet.BasicBlock, [1, 1, 1, 1], 4, 10, cifar_stem=True), 32, 1013,
           structure("torchvision ResNet class, BasicBlock and module names (conv1, bn1, relu, maxpool, layerS.B, "
                     "avgpool, fc) but a CIFAR port: conv1 = 3x3 STRIDE-1 conv WITH bias, maxpool = nn.Identity "
                     "(no pooling, no keys). Must not be read as torchvision's 7x7 s2 stem + max pool (shapes "
                     "[4,3,3,3] and the conv1.bias key are the evidence)",
                     OrderedDict([("kernel", 3), ("stride", 1), ("padding", 1), ("bias", True), ("bn", True),
                                  ("relu", True), ("maxpool", False)]),
                     "basic", "conv1", "1x1 conv + BN `downsample.0/.1`", True, False, head(flatten=True),
                     (1, 1, 1, 1), (4, 8, 16, 32)),
           made + "; torchvision %s ResNet/BasicBlock classes (%s)" % (torchvision.__version__, TV_NOTE or "C ops loaded"),
           layers_hook=lambda m, x: hook_layers(m, x, tv_names))

    # 13. Lightning.
    make_lightning(fx)

    # 14. pytorch/examples ImageNet checkpoint.
    make_pt_examples(fx)

    # 15. whole pickled ResNet-8.
    make_resnet8(fx)

    # 16. torch.compile prefix.
    make_compiled(fx)
    return fx


def make_timm(fx):
    import argparse as ap
    import timm
    from timm.models.resnet import BasicBlock, ResNet

    for name, stem_type, seed in [("resnet-d", "deep", 1007), ("resnet-t", "deep_tiered", 1017)]:
        def builder(stem_type=stem_type):
            return ResNet(block=BasicBlock, layers=[1, 1, 1, 1], stem_type=stem_type, stem_width=8, avg_down=True,
                          channels=(8, 8, 8, 16), num_classes=5)
        torch.manual_seed(seed)
        model = prepare(builder(), seed, 64)
        x = make_input(64)
        y = run(model, x)
        fx.golden(name, x, y)
        notes, extra = [], {}
        if stem_type == "deep_tiered":
            # timm's hub format: a plain state dict in safetensors (what timm's push_to_hub writes).
            from safetensors.torch import load_file, save_file
            path = os.path.join(fx.folder(name), "model.safetensors")
            save_file(model.state_dict(), path)
            back = builder()
            back.load_state_dict(load_file(path), strict=True)
            require_same(path, run(back, x), y)
            f = OrderedDict([("path", name + "/model.safetensors"), ("container", "safetensors"),
                             ("wrapper", "state_dict (timm hub style, no config)"), ("key_prefix", ""),
                             ("reload_check", "safetensors.torch.load_file, load_state_dict(strict=True) into a "
                                              "fresh model: output identical to the golden")])
        else:
            # A slightly different EMA copy: one SGD step (eval mode, so BN statistics stay) on a copy, then
            # ema = 0.9·weights + 0.1·stepped, as an EMA a step behind would be.
            stepped = copy.deepcopy(model)
            opt = torch.optim.SGD(stepped.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=2e-5)
            stepped.eval()
            stepped(torch.from_numpy(natural_images(np.random.default_rng(seed + 2), 8, 64))).logsumexp(1).mean().backward()
            opt.step()
            sd = model.state_dict()
            ema_sd = OrderedDict()
            for (k, v), v2 in zip(sd.items(), stepped.state_dict().values()):
                ema_sd[k] = (0.9 * v + 0.1 * v2) if v.is_floating_point() else v.clone()
            ema_model = builder()
            ema_model.load_state_dict(ema_sd, strict=True)
            y_ema = run(ema_model, x)
            ema_diff = float(np.abs(y_ema - y).max())
            arch = "resnet10d"
            args = ap.Namespace(model=arch, batch_size=128, lr=0.01, opt="sgd", momentum=0.9, weight_decay=2e-5,
                                model_ema=True, model_ema_decay=0.9998, epochs=100, num_classes=5, img_size=64)
            obj = {"epoch": 41, "arch": arch, "state_dict": sd, "optimizer": opt.state_dict(), "version": 2,
                   "args": args, "state_dict_ema": ema_sd, "metric": 71.2}
            f = save_and_check_sd(fx, name, "checkpoint-41.pth.tar", obj, builder, x, y, lambda o: o["state_dict"],
                                  safe=(ap.Namespace,), container="torch zip",
                                  wrapper="timm CheckpointSaver dict {'epoch', 'arch', 'state_dict', 'optimizer', "
                                          "'version', 'args', 'state_dict_ema', 'metric'}", key_prefix="")
            # The EMA copy loads too, and gives the output computed above.
            with torch.serialization.safe_globals([ap.Namespace]):
                ema_back = torch.load(os.path.join(fx.out, f["path"]), weights_only=True)["state_dict_ema"]
            m2 = builder()
            m2.load_state_dict(ema_back, strict=True)
            require_same(f["path"], run(m2, x), y_ema)
            f["reload_check"] += "; state_dict_ema likewise loads strict=True and reproduces its own output"
            notes = ["golden io.npz is for `state_dict` (the non-EMA weights); `state_dict_ema` = 0.9·weights "
                     "+ 0.1·(weights after one SGD step), running statistics blended the same way (they are equal: "
                     "the step ran in eval mode); its output differs from the golden by up to %.3g, so taking the "
                     "EMA copy fails parity" % ema_diff,
                     "args is an argparse.Namespace; optimizer is SGD(nesterov) state with momentum buffers after "
                     "one step"]
            extra = {"ema_output_max_abs_diff": ema_diff, "checkpoint_keys": list(obj)}
        if stem_type == "deep":
            stem = OrderedDict([("deep", [OrderedDict([("kernel", 3), ("stride", 2), ("out", 8)]),
                                          OrderedDict([("kernel", 3), ("stride", 1), ("out", 8)]),
                                          OrderedDict([("kernel", 3), ("stride", 1), ("out", 16)])]),
                                ("bias", False), ("bn", "after each conv (conv1.1, conv1.4, bn1)"), ("relu", True),
                                ("maxpool", OrderedDict([("kernel", 3), ("stride", 2), ("padding", 1)]))])
            words = "timm ResNet-D (resnet*d): deep stem `conv1.0/1/3/4/6` + `bn1` (3x3 s2 conv 8, BN, ReLU, 3x3 " \
                    "conv 8, BN, ReLU, 3x3 conv 16), bn1, act1, MaxPool(3,2,1)"
        else:
            stem = OrderedDict([("deep", [OrderedDict([("kernel", 3), ("stride", 2), ("out", 6)]),
                                          OrderedDict([("kernel", 3), ("stride", 1), ("out", 8)]),
                                          OrderedDict([("kernel", 3), ("stride", 1), ("out", 16)])]),
                                ("bias", False), ("bn", "after each conv (conv1.1, conv1.4, bn1)"), ("relu", True),
                                ("maxpool", OrderedDict([("kernel", 3), ("stride", 2), ("padding", 1)]))])
            words = "timm ResNet-T (resnet*t): deep tiered stem (3x3 s2 conv 3*(8//4)=6, BN, ReLU, 3x3 conv 8, " \
                    "BN, ReLU, 3x3 conv 16) + bn1, act1, MaxPool(3,2,1)"
        struct = structure(
            words + "; timm BasicBlock (stride on conv1, post-add ReLU act2); every projection avg_down: "
            "`downsample.0` AvgPool2d(2, stride, ceil_mode=True, count_include_pad=False) (Identity at stride 1), "
            "`downsample.1` 1x1 conv, `downsample.2` BN; global pool `global_pool`, `fc`",
            stem, "basic", "conv1 (3x3)", "ResNet-D: avg-pool 2x2 (stride 2; Identity where stride 1) then 1x1 "
            "conv + BN; stage 1 has one too (16→8 channels, stride 1)", True, False, head(flatten=True),
            (1, 1, 1, 1), (8, 8, 8, 16))
        fx.add(name, [f], x, y, struct,
               "the real timm %s timm.models.resnet.ResNet(block=BasicBlock, layers=[1,1,1,1], stem_type=%r, "
               "stem_width=8, avg_down=True, channels=(8,8,8,16), num_classes=5), randomised + BN-calibrated"
               % (timm.__version__, stem_type), model=model,
               notes=notes, timm_version=timm.__version__, **extra)


def make_hf(fx):
    import transformers
    from safetensors.torch import load_file
    from transformers import ResNetConfig, ResNetForImageClassification

    layer_names = ["resnet.embedder", "resnet.encoder.stages.0", "resnet.encoder.stages.1", "resnet.pooler",
                   "classifier"]
    for kind, seed in [("basic", 1021), ("bottleneck", 1022)]:
        name = "hf-resnet-" + kind
        cfg = ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type=kind, num_labels=5)
        builder = lambda cfg=cfg: ResNetForImageClassification(cfg)
        torch.manual_seed(seed)
        model = prepare(builder(), seed, 64)
        x = make_input(64)
        fwd = lambda m, t: m(pixel_values=t).logits
        y = run(model, x, lambda t: fwd(model, t))
        layers = hook_layers(model, x, layer_names) if kind == "basic" else None
        fx.golden(name, x, y, layers)
        folder = fx.folder(name)
        model.save_pretrained(folder)
        for extra in os.listdir(folder):
            if extra not in ("config.json", "model.safetensors", "io.npz"):
                raise SystemExit("%s: unexpected file %s from save_pretrained" % (name, extra))
        back = ResNetForImageClassification.from_pretrained(folder)
        require_same(folder, run(back, x, lambda t: fwd(back, t)), y)
        m2 = builder()
        m2.load_state_dict(load_file(os.path.join(folder, "model.safetensors")), strict=True)
        require_same(folder, run(m2, x, lambda t: fwd(m2, t)), y)
        files = [OrderedDict([("path", name + "/model.safetensors"), ("container", "safetensors"),
                              ("wrapper", "state_dict (HF save_pretrained)"), ("key_prefix", ""),
                              ("reload_check", "ResNetForImageClassification.from_pretrained(folder) and "
                                               "safetensors.torch.load_file + load_state_dict(strict=True): output "
                                               "identical to the golden")]),
                 OrderedDict([("path", name + "/config.json"), ("container", "json"), ("wrapper", "ResNetConfig")])]
        fx.add(name, files, x, y, hf_structure(kind), "the real transformers %s ResNetForImageClassification("
               "ResNetConfig(embedding_size=8, hidden_sizes=[8,16], depths=[1,1], layer_type=%r, num_labels=5)), "
               "randomised + BN-calibrated, save_pretrained" % (transformers.__version__, kind), model=model,
               layers=layers, transformers_version=transformers.__version__,
               notes=["golden = model(pixel_values=input).logits"] +
                     (["layer goldens hooked on HF module names: resnet.embedder (after the max pool), "
                       "resnet.encoder.stages.N (stage outputs), resnet.pooler (N,C,1,1), classifier (logits)"]
                      if layers else []))
        # The same weights as pytorch_model.bin (torch.save of the state dict beside config.json).
        # Same weights, so same golden: the folder has no io.npz of its own (size budget); use name/io.npz.
        name_bin = name + "-bin"
        shutil.copyfile(os.path.join(folder, "config.json"), os.path.join(fx.folder(name_bin), "config.json"))
        f = save_and_check_sd(fx, name_bin, "pytorch_model.bin", model.state_dict(), builder, x, y,
                              forward=fwd, container="torch zip", wrapper="state_dict (HF pytorch_model.bin)",
                              key_prefix="")
        back = ResNetForImageClassification.from_pretrained(fx.folder(name_bin))
        require_same(name_bin, run(back, x, lambda t: fwd(back, t)), y)
        f["reload_check"] += "; from_pretrained(folder) reads it too"
        fx.add(name_bin, [f, OrderedDict([("path", name_bin + "/config.json"), ("container", "json"),
                                          ("wrapper", "ResNetConfig")])], x, y, hf_structure(kind),
               "the model of %s written as pytorch_model.bin: transformers %s no longer has "
               "save_pretrained(safe_serialization=False), so the file is torch.save(model.state_dict()), which is "
               "what that option wrote" % (name, transformers.__version__), model=model, golden=name + "/io.npz",
               transformers_version=transformers.__version__)


def hf_structure(kind):
    stem = OrderedDict([("kernel", 7), ("stride", 2), ("padding", 3), ("bias", False), ("bn", True), ("relu", True),
                        ("maxpool", OrderedDict([("kernel", 3), ("stride", 2), ("padding", 1)]))])
    if kind == "basic":
        return structure("HF ResNetForImageClassification, layer_type basic: embedder 7x7 s2 conv + BN + ReLU "
                         "(`resnet.embedder.embedder.convolution/normalization`), MaxPool(3,2,1); stages "
                         "`resnet.encoder.stages.S.layers.B` with `layer.0/1` (ResNetConvLayer: conv, BN, ReLU on "
                         "the first only) and `shortcut` (1x1 conv + BN, where shape or stride changes); post-add "
                         "ReLU; AdaptiveAvgPool (`resnet.pooler`), `classifier.0` Flatten, `classifier.1` Linear",
                         stem, "basic", "layer.0 (first 3x3)", "1x1 conv (stride) + BN `shortcut.convolution/"
                         "normalization`; stage 0 8→8 at stride 1 has none", True, False, head(flatten=True,
                                                                                            linear="classifier.1"),
                         (1, 1), (8, 16))
    return structure("HF ResNetForImageClassification, layer_type bottleneck (downsample_in_bottleneck=False: "
                     "stride on the 3x3 `layer.1`), reduction 4: `layer.0` 1x1, `layer.1` 3x3, `layer.2` 1x1 "
                     "(no ReLU); shortcut 1x1 conv + BN; embedder as for basic; `classifier.1` Linear",
                     stem, "bottleneck", "layer.1 (3x3), v1.5", "1x1 conv (stride) + BN", True, False,
                     head(flatten=True, linear="classifier.1"), (1, 1), (8, 16), bottleneck_width=[2, 4])


def make_lightning(fx):
    import lightning
    import lightning.pytorch as pl

    name, seed, size = "lightning-ckpt", 1031, 32
    x = make_input(size)

    class LitResNet(pl.LightningModule):
        def __init__(self, lr=0.05, num_classes=10):
            super().__init__()
            self.save_hyperparameters()
            self.model = CifarPost((1, 1, 1), (4, 8, 16), "conv1x1-bn", num_classes, head_name="fc")
            self.loss = nn.CrossEntropyLoss()

        def forward(self, t):
            return self.model(t)

        def training_step(self, batch, _idx):
            xb, yb = batch
            return self.loss(self.model(xb), yb)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=0.9)

    torch.manual_seed(seed)
    lit = LitResNet()
    randomize(lit.model, seed)
    rng = np.random.default_rng(seed + 3)
    xs = torch.from_numpy(natural_images(rng, 32, size))
    ys = torch.from_numpy(rng.integers(0, 10, 32))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(xs, ys), batch_size=8, shuffle=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = pl.Trainer(max_steps=2, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                             enable_progress_bar=False, enable_model_summary=False, deterministic=True)
        trainer.fit(lit, loader)
    calibrate(lit.model, size, seed + 1)
    lit.eval()
    y = run(lit.model, x)
    fx.golden(name, x, y)
    path = os.path.join(fx.folder(name), "epoch=0-step=2.ckpt")
    trainer.save_checkpoint(path, weights_only=False)  # the full checkpoint: optimizer states, callbacks, loops
    try:
        with torch.serialization.safe_globals([]):
            ckpt = torch.load(path, weights_only=True)
        how = "torch.load(weights_only=True)"
    except Exception as err:  # report what the container needs
        raise SystemExit("%s: weights_only load failed: %s" % (path, err))
    back = CifarPost((1, 1, 1), (4, 8, 16), "conv1x1-bn", 10, head_name="fc")
    back.load_state_dict(strip("model.")(ckpt["state_dict"]), strict=True)
    require_same(path, run(back, x), y)
    lit2 = LitResNet.load_from_checkpoint(path, weights_only=True)
    require_same(path, run(lit2.model, x), y)
    f = OrderedDict([("path", name + "/epoch=0-step=2.ckpt"), ("container", "torch zip"),
                     ("wrapper", "Lightning checkpoint {%s}" % ", ".join(repr(k) for k in ckpt)),
                     ("key_prefix", "model."),
                     ("reload_check", how + ", `model.` stripped, load_state_dict(strict=True): output identical; "
                                            "LitResNet.load_from_checkpoint too")])
    fx.add(name, [f], x, y,
           structure("Lightning module wrapping `self.model` = CIFAR ResNet (conv1/bn1 3x3 s1 stem, post-activation "
                     "basic blocks, projection 1x1 conv + BN `downsample.0/.1`, global average pool, `fc`)",
                     CIFAR_STEM, "basic", "conv1", "1x1 conv stride 2 + BN", True, False, GAP_HEAD, (1, 1, 1),
                     (4, 8, 16)),
           "the real lightning %s: LightningModule trained by lightning.Trainer(max_steps=2, accelerator='cpu', "
           "logger=False, enable_checkpointing=False, enable_progress_bar=False) on 4 synthetic batches of 8, then "
           "BN-calibrated, then trainer.save_checkpoint" % lightning.__version__, model=lit.model,
           lightning_version=lightning.__version__, checkpoint_keys=list(ckpt),
           notes=["state_dict keys start with `model.` (the LightningModule attribute); optimizer_states hold SGD "
                  "momentum after 2 steps; hyper_parameters = {'lr': 0.05, 'num_classes': 10}"])


def make_pt_examples(fx):
    name, seed, size = "pt-examples-ckpt", 1041, 64
    # Widths 2/4/8/16 keep the file (weights + one momentum buffer each) small at resnet18's [2,2,2,2].
    builder = lambda: tv_mini(tv_resnet.BasicBlock, [2, 2, 2, 2], 2, 5)
    torch.manual_seed(seed)
    model = prepare(builder(), seed, size)
    x = make_input(size)
    y = run(model, x)
    fx.golden(name, x, y)
    dp = nn.DataParallel(model)
    opt = torch.optim.SGD(dp.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    twin = copy.deepcopy(dp)
    opt_twin = torch.optim.SGD(twin.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    twin.eval()
    twin(torch.from_numpy(natural_images(np.random.default_rng(seed + 2), 4, size))).logsumexp(1).sum().backward()
    opt_twin.step()
    obj = {"epoch": 3, "arch": "resnet18", "state_dict": dp.state_dict(), "best_acc1": torch.tensor(12.5),
           "optimizer": opt_twin.state_dict()}
    f = save_and_check_sd(fx, name, "checkpoint.pth.tar", obj, builder, x, y,
                          lambda o: strip("module.")(o["state_dict"]), container="torch zip",
                          wrapper="pytorch/examples imagenet {'epoch', 'arch', 'state_dict', 'best_acc1', 'optimizer'}",
                          key_prefix="module.")
    fx.add(name, [f], x, y,
           structure("torchvision resnet18 layout at widths 2/4/8/16 ([2,2,2,2] BasicBlock, 7x7 s2 stem + "
                     "MaxPool(3,2,1), 1x1 conv + BN downsample, avgpool, fc 5 classes), saved as pytorch/examples "
                     "main.py does: nn.DataParallel state dict (`module.` prefix)", TV_STEM, "basic", "conv1",
                     "1x1 conv stride 2 + BN `downsample.0/.1`", True, False, head(flatten=True),
                     (2, 2, 2, 2), (2, 4, 8, 16)),
           "torchvision %s ResNet/BasicBlock classes at reduced width, randomised + BN-calibrated" % torchvision.__version__,
           model=model, checkpoint_keys=list(obj),
           notes=["best_acc1 is a 0-d float32 tensor", "optimizer: SGD(momentum=0.9, weight_decay=1e-4) after one "
                  "step taken on a copy (momentum_buffer tensors per parameter index); the saved weights are the "
                  "pre-step ones the golden uses", "arch says resnet18 and the blocks are [2,2,2,2], but the "
                  "widths are 2/4/8/16, not 64/128/256/512"])


def make_resnet8(fx):
    name, seed, size = "whole-module-resnet8", 1051, 32
    torch.manual_seed(seed)
    model = prepare(ResNet8(10), seed, size)
    x = make_input(size)
    y = run(model, x)
    fx.golden(name, x, y)
    path = os.path.join(fx.folder(name), "resnet8.pt")
    torch.save(model, path)
    back = torch.load(path, weights_only=False)  # our own file, written a moment ago
    require_same(path, run(back, x), y)
    fresh = ResNet8(10)
    fresh.load_state_dict(back.state_dict(), strict=True)
    require_same(path, run(fresh, x), y)
    classes = sorted({"%s.%s" % (type(m).__module__, type(m).__qualname__) for m in model.modules()})
    f = OrderedDict([("path", name + "/resnet8.pt"), ("container", "torch zip"),
                     ("wrapper", "whole nn.Module (torch.save(model))"), ("key_prefix", ""),
                     ("pickled_classes", classes),
                     ("reload_check", "torch.load(weights_only=False) in the writing script (needs its __main__ "
                                      "classes): output identical; its state_dict loads strict=True into a fresh "
                                      "ResNet8 with the same output")])
    fx.add(name, [f], x, y,
           structure("EEMBC / MLPerf-Tiny ResNet-8 v1 as a PyTorch port: conv(16, 3x3, bias) BN ReLU; stack1 "
                     "16 (identity shortcut), stack2 32 s2, stack3 64 s2, each conv-BN-ReLU, conv-BN, shortcut "
                     "1x1 conv WITH bias and NO BN where the shape changes, add, ReLU; AvgPool2d(8), Flatten, "
                     "Linear `dense`, Softmax (the golden is probabilities)",
                     OrderedDict(CIFAR_STEM, bias=True), "basic", "conv1", "1x1 conv stride 2, bias, no BN", True,
                     False, head(pool="AvgPool2d(8) = global on 8x8", flatten=True, softmax=True), (1, 1, 1),
                     (16, 32, 64), conv_bias=True),
           made_by="own classes (defined in the script's __main__), randomised + BN-calibrated, torch.save(model)",
           model=model, output_is="probabilities (nn.Softmax(dim=1) is the last module)",
           notes=["the pickle names __main__.ResNet8 and __main__.Resnet8Block beside torch.nn classes; the module "
                  "tree records kernel_size/stride/padding/bias of each Conv2d, eps/momentum of each BN, "
                  "AvgPool2d kernel 8 and Softmax dim 1"])


def make_compiled(fx):
    name, seed, size = "compiled-prefix", 1061, 32
    builder = lambda: CifarPost((1, 1, 1), (4, 8, 16), "conv1x1-bn", 10, head_name="linear")
    torch.manual_seed(seed)
    model = prepare(builder(), seed, size)
    x = make_input(size)
    y = run(model, x)
    fx.golden(name, x, y)
    compiled = torch.compile(model)  # the real OptimizedModule; never called, so nothing is compiled
    sd = compiled.state_dict()
    assert all(k.startswith("_orig_mod.") for k in sd)
    f = save_and_check_sd(fx, name, "model.pth", sd, builder, x, y, strip("_orig_mod."), container="torch zip",
                          wrapper="state_dict of torch.compile(model)", key_prefix="_orig_mod.")
    fx.add(name, [f], x, y,
           structure("CIFAR ResNet (conv1/bn1 stem, post-activation basic blocks, 1x1 conv + BN downsample, "
                     "global average pool, `linear`) saved from torch.compile(model).state_dict()",
                     CIFAR_STEM, "basic", "conv1", "1x1 conv stride 2 + BN", True, False, GAP_HEAD, (1, 1, 1),
                     (4, 8, 16)),
           "own classes, randomised + BN-calibrated; torch.compile(model) (torch %s, the real OptimizedModule, "
           "not run) gives every key the `_orig_mod.` prefix" % torch.__version__, model=model)


# ---------------------------------------------------------------- manifest and README

def versions():
    import lightning
    import safetensors
    import timm
    import transformers
    return OrderedDict([("torch", torch.__version__), ("torchvision", torchvision.__version__),
                        ("timm", timm.__version__), ("transformers", transformers.__version__),
                        ("safetensors", safetensors.__version__), ("lightning", lightning.__version__),
                        ("numpy", np.__version__)])


def write_docs(fx):
    vs = versions()
    manifest = OrderedDict([
        ("generator", "tools/make_recognition_fixtures.py"), ("versions", vs),
        ("input", "numpy.random.default_rng(%d).standard_normal((2, 3, H, W)).astype(float32), NCHW, fed as is; "
                  "H = W = 32 for CIFAR-style stems, 64 for ImageNet-style stems" % INPUT_SEED),
        ("output", "the model in eval mode under torch.no_grad(), float32"),
        ("weights", "random: conv N(0, 2/fan_in), conv bias N(0, 0.1^2), BN gamma U(0.5, 1.5), beta N(0, 0.2^2), "
                    "linear N(0, 1/in), bias N(0, 0.1^2); fixed seed per fixture"),
        ("bn_calibration", "running statistics reset, momentum=None (cumulative average), train mode, no_grad, "
                           "%d batches of %d synthetic natural-looking images (1/f noise + sinusoids + edges, "
                           "correlated colour channels, standardised per channel; see natural_images in the "
                           "script), then eval; momentum restored to 0.1; num_batches_tracked = %d"
                           % (CALIB_BATCHES, CALIB_BATCH_SIZE, CALIB_BATCHES)),
        ("bn_eps", 1e-5),
        ("torchvision_note", TV_NOTE),
        ("fixtures", fx.entries)])
    with open(os.path.join(fx.out, "MANIFEST.json"), "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")
    lines = ["# Recognition fixtures: ResNet layouts no naming table lists",
             "",
             "Written by `tools/make_recognition_fixtures.py` with torch %s, torchvision %s, timm %s, transformers %s,"
             % (vs["torch"], vs["torchvision"], vs["timm"], vs["transformers"]),
             "safetensors %s, lightning %s, numpy %s. Tiny models with random weights whose BatchNorm running"
             % (vs["safetensors"], vs["lightning"], vs["numpy"]),
             "statistics were calibrated on synthetic natural-looking images (so the statistics carry evidence of the",
             "wiring). Each folder has the weight file(s) and `io.npz` (`input` (2, 3, H, W) float32 from",
             "`default_rng(%d).standard_normal`, `output` float32, `layout` 'NCHW'). `MANIFEST.json` gives the true"
             % INPUT_SEED,
             "structure of each in words and fields, sha256, sizes and the reload check every file passed.",
             "",
             "| fixture | exercises | made with | size (bytes) |",
             "|---|---|---|---|"]
    for e in fx.entries:
        size = sum(os.path.getsize(os.path.join(fx.out, e["name"], f)) for f in os.listdir(os.path.join(fx.out, e["name"])))
        lines.append("| `%s` | %s | %s | %d |" % (e["name"], README_LINES[e["name"]][0], README_LINES[e["name"]][1], size))
    with open(os.path.join(fx.out, "README.md"), "w") as f:
        f.write("\n".join(lines) + "\n")


README_LINES = {
    "pre-act": ("pre-activation basic blocks, 1x1 projection on the pre-activated input, final BN+ReLU; kuangliu "
                "checkpoint `{'net', 'acc', 'epoch'}`", "own kuangliu-named classes"),
    "preact-no-final-bn": ("pre-activation without final BN/ReLU; BN-ReLU-1x1 projection; flat `blocks.N`; "
                           "Sequential head with Flatten", "own classes"),
    "option-a-split-after": ("option A with all zero channels after; stem `conv`/`bn`; `stages.S.B.conv_a…`; "
                             "`classifier`", "own classes"),
    "avgpool-zeropad": ("avg_pool2d(2) + zero-channel shortcut; conv bias everywhere", "own classes"),
    "proj-1x1-bias-nobn": ("1x1 stride-2 projection with bias and no BN", "own classes"),
    "proj-3x3-s2": ("3x3 stride-2 projection + BN", "own classes"),
    "resnet-d": ("timm resnet*d: deep stem, avg-pool + 1x1 conv + BN projection; timm training checkpoint with "
                 "EMA copy (golden is for the non-EMA weights)", "real timm"),
    "resnet-t": ("timm resnet*t: deep tiered stem, avg_down; plain state dict in safetensors (timm hub style)",
                 "real timm"),
    "deep-stem-bottleneck": ("3-conv deep stem + torchvision v1.5 bottlenecks (stride on the 3x3)",
                             "own stem, torchvision Bottleneck"),
    "bottleneck-v1": ("original v1 bottleneck: stride on the first 1x1; torchvision names", "own classes"),
    "uneven-stages": ("stages [3, 3, 1] (pruned-ResNet-56 shape), option A", "own classes"),
    "head-flatten-dropout": ("head AdaptiveAvgPool → Flatten → Dropout → Linear (`head.3`)", "own classes"),
    "head-avgpool4-flatten": ("head AvgPool2d(4) → Flatten → `fc`, four stages", "own classes"),
    "hf-resnet-basic": ("HF transformers ResNet, basic layers, safetensors + config.json; per-layer goldens on HF "
                        "module names", "real transformers, save_pretrained"),
    "hf-resnet-basic-bin": ("the same weights as `pytorch_model.bin` + config.json; golden: ../hf-resnet-basic/io.npz", "real transformers model, torch.save"),
    "hf-resnet-bottleneck": ("HF transformers ResNet, bottleneck layers, safetensors", "real transformers, "
                                                                                       "save_pretrained"),
    "hf-resnet-bottleneck-bin": ("the same weights as `pytorch_model.bin` + config.json; golden: "
                                 "../hf-resnet-bottleneck/io.npz", "real transformers model, torch.save"),
    "tv-names-cifar-stem": ("the trap: torchvision names, but 3x3 s1 biased stem conv and no max pool; per-layer "
                            "goldens on torchvision module names (relu, maxpool, layerN, avgpool, fc)",
                            "torchvision classes, stem replaced"),
    "lightning-ckpt": ("real Lightning checkpoint (`model.` prefix, optimizer_states, hyper_parameters)",
                       "real lightning Trainer, 2 steps"),
    "pt-examples-ckpt": ("pytorch/examples ImageNet checkpoint: `module.` prefix, 0-d best_acc1, SGD momentum state",
                         "torchvision classes"),
    "whole-module-resnet8": ("whole pickled EEMBC ResNet-8 module (__main__ classes), 1x1 biased projection, "
                             "softmax head", "own classes, torch.save(model)"),
    "compiled-prefix": ("`_orig_mod.` keys from torch.compile", "own classes, real torch.compile wrapper"),
}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--out", default=OUT)
    args = p.parse_args()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    shutil.rmtree(args.out, ignore_errors=True)
    os.makedirs(args.out)
    fx = make_all(args.out)
    write_docs(fx)
    total = 0
    for root, _dirs, files in os.walk(args.out):
        for f in files:
            total += os.path.getsize(os.path.join(root, f))
    print("%d fixtures, %d bytes in %s" % (len(fx.entries), total, args.out))


if __name__ == "__main__":
    main()
