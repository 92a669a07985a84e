#!/usr/bin/env python3
"""Writes the PyTorch fixtures (fixtures/torch/) and the hostile corpus (fixtures/hostile/).

Environment (pinned in tools/requirements-torch-fixtures.txt):

    python3.11 -m venv venv-torch
    venv-torch/bin/pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
    venv-torch/bin/pip install --no-deps torchvision==0.28.0
    venv-torch/bin/pip install numpy==2.4.6 pillow

Never import tensorflow in the same process.

The torchvision wheel on PyPI is a CUDA build whose C extension cannot load next to the CPU torch.
We only need torchvision.models.resnet (pure Python), so when the extension does not load the
script stubs torchvision's meta registrations (which require the C ops) and says so in the manifest.
The module names come from torchvision's own Python classes either way.

Usage:
    python tools/make_torch_fixtures.py              # fixtures/torch + fixtures/hostile in the repo
    python tools/make_torch_fixtures.py --full DIR   # full-size models + goldens into DIR (outside the repo)

Everything is deterministic: fixed seeds, one intra-op thread, npz members with a fixed timestamp.
The hostile files are only ever written and disassembled with pickletools here, never loaded.
"""
import argparse
import copy
import hashlib
import io
import json
import math
import os
import pickle
import pickletools
import shutil
import struct
import sys
import tempfile
import time
import zipfile
from collections import OrderedDict

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TORCH_OUT = os.path.join(ROOT, "fixtures", "torch")
HOSTILE_OUT = os.path.join(ROOT, "fixtures", "hostile")
INPUT_SEED = 20240601  # the same draw as ../shared/fixtures-external (EXPECTED.md)
ZIP_TIME = (1980, 1, 1, 0, 0, 0)
MARKER = "/tmp/resnet-convert-pwned-"


from torchvision_shim import import_torchvision  # noqa: E402  (tools/ is the script directory)

torchvision, tv_resnet, TV_NOTE = import_torchvision()


# ---------------------------------------------------------------- models

def tv_mini(block, layers, base, num_classes=10, groups=1, width_per_group=64):
    """A torchvision ResNet whose stage widths are base, 2·base, 4·base, 8·base instead of 64…512.

    torchvision hard-codes 64 for the stem and the first stage, so a throw-away subclass rescales the
    planes that `_make_layer` receives and the stem and fc are replaced in place (same attribute, same
    position in `_modules`, so the state-dict keys and their order are torchvision's). The object's
    class is then set back to torchvision's ResNet, so that nothing of this script remains in it
    (a pickle of the whole module would name only torchvision and torch classes).
    """
    class Rescaled(tv_resnet.ResNet):
        def _make_layer(self, block, planes, blocks, stride=1, dilate=False):
            if planes == 64:
                self.inplanes = base
            return super()._make_layer(block, planes * base // 64, blocks, stride, dilate)

    model = Rescaled(block, layers, num_classes=num_classes, groups=groups, width_per_group=width_per_group)
    model.conv1 = nn.Conv2d(3, base, kernel_size=7, stride=2, padding=3, bias=False)
    model.bn1 = nn.BatchNorm2d(base)
    model.fc = nn.Linear(base * 8 * block.expansion, num_classes)
    model.__class__ = tv_resnet.ResNet
    return model


class ResBlock(nn.Module):
    """The seed's PyTorch block: conv→ReLU→BN twice, a 1×1 stride-2 conv + ReLU shortcut, no final ReLU."""

    def __init__(self, input_channel, filters, downsample=False):
        super().__init__()
        self.downsample = downsample
        stride = 2 if downsample else 1
        self.layer1 = nn.Sequential(
            nn.Conv2d(input_channel, filters, kernel_size=3, stride=stride, padding=1),
            nn.ReLU(), nn.BatchNorm2d(filters))
        self.layer2 = nn.Sequential(
            nn.Conv2d(filters, filters, kernel_size=3, stride=1, padding=1),
            nn.ReLU(), nn.BatchNorm2d(filters))
        if downsample:
            self.shortcut = nn.Sequential(
                nn.Conv2d(input_channel, filters, kernel_size=1, stride=2, padding=0), nn.ReLU())

    def forward(self, inputs):
        x = self.layer2(self.layer1(inputs))
        if self.downsample:
            inputs = self.shortcut(inputs)
        return torch.add(inputs, x)


class SeedResNet(nn.Module):
    """The seed's PyTorch ResNet with the same attribute names; width and block counts are parameters."""

    def __init__(self, base=64, num_block=(3, 4, 6, 3), num_classes=10):
        super().__init__()

        def stage(count, cin, filters, downsample=True):
            blocks = []
            for idx in range(count):
                blocks.append(ResBlock(cin if idx == 0 else filters, filters, downsample and idx == 0))
            return nn.Sequential(*blocks)

        self.conv1 = nn.Conv2d(3, base, kernel_size=7, stride=2, padding=3)
        self.maxpool = nn.MaxPool2d(3, stride=2)
        self.conv2 = stage(num_block[0], base, base, downsample=False)
        self.conv3 = stage(num_block[1], base, 2 * base)
        self.conv4 = stage(num_block[2], 2 * base, 4 * base)
        self.conv5 = stage(num_block[3], 4 * base, 8 * base)
        self.global_avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.classifier = nn.Linear(8 * base, num_classes)

    def forward(self, inputs):
        x = self.maxpool(self.conv1(inputs))
        x = self.conv5(self.conv4(self.conv3(self.conv2(x))))
        x = self.global_avgpool(x)
        return self.classifier(x.view(x.size(0), -1))


class ZeroPadShortcut(nn.Module):
    """Option A of the paper: every second pixel, then `pad` zero channels before and after."""

    def __init__(self, pad):
        super().__init__()
        self.pad = pad

    def forward(self, x):
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad), "constant", 0.0)


class CifarBlock(nn.Module):
    """Basic block of the paper's CIFAR ResNets; `shortcut` is empty, zero-padding (A) or conv+BN (B)."""

    def __init__(self, cin, planes, stride, option):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != planes:
            if option == "A":
                self.shortcut = ZeroPadShortcut(planes // 4)
            else:
                self.shortcut = nn.Sequential(
                    nn.Conv2d(cin, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """CIFAR ResNet-(6n+2): conv1/bn1, layer1..3 of n blocks at w, 2w, 4w, global average pool, `linear`."""

    def __init__(self, n=3, width=16, option="A", num_classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        cin = width
        for i, (planes, stride) in enumerate([(width, 1), (2 * width, 2), (4 * width, 2)]):
            blocks = []
            for j in range(n):
                blocks.append(CifarBlock(cin, planes, stride if j == 0 else 1, option))
                cin = planes
            setattr(self, "layer%d" % (i + 1), nn.Sequential(*blocks))
        self.linear = nn.Linear(4 * width, num_classes)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = F.avg_pool2d(out, out.size()[3])
        return self.linear(out.view(out.size(0), -1))


def randomize(model, seed):
    """Random weights and BN statistics, so that a swapped or misread tensor changes the output."""
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
                m.running_mean.copy_(torch.randn(c, generator=g) * 0.5)
                m.running_var.copy_(torch.rand(c, generator=g) * 1.5 + 0.5)
                m.num_batches_tracked.fill_(int(torch.randint(1, 100000, (1,), generator=g)))
            elif isinstance(m, nn.Linear):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) / math.sqrt(m.weight.shape[1]))
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
    return model.eval()


# ---------------------------------------------------------------- goldens and files

def make_input(shape):
    return np.random.default_rng(INPUT_SEED).standard_normal((2,) + tuple(shape)).astype(np.float32)


def run(model, x):
    with torch.no_grad():
        y = model.eval()(torch.from_numpy(x)).float().numpy()
    if not np.all(np.isfinite(y)) or np.array_equal(y[0], y[1]):
        raise SystemExit("degenerate output")
    return y.astype(np.float32)


def write_npz(path, arrays):
    """np.savez without the wall-clock timestamps, so reruns give identical bytes."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        for name, arr in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.asanyarray(arr), allow_pickle=False)
            z.writestr(zipfile.ZipInfo(name + ".npy", date_time=ZIP_TIME), buf.getvalue())


def write_golden(folder, x, y):
    os.makedirs(folder, exist_ok=True)
    write_npz(os.path.join(folder, "io.npz"), {"input": x, "output": y, "layout": np.array("NCHW")})


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def container_of(path):
    with open(path, "rb") as f:
        return "zip" if f.read(2) == b"PK" else "legacy"


def describe_sd(sd):
    """Summary of a state dict for the manifest: tensor count, element count, stored dtypes."""
    dtypes = sorted({str(v.dtype).replace("torch.", "") for v in sd.values()})
    return len(sd), int(sum(v.numel() for v in sd.values())), dtypes


class Recorder:
    def __init__(self, out_dir):
        self.out_dir = out_dir
        self.entries = []

    def add(self, path, model, wrapper, dtype, golden, in_shape, out_shape, n_tensors, n_elems, notes, **extra):
        rel = os.path.relpath(path, self.out_dir)
        entry = OrderedDict([
            ("path", rel), ("container", container_of(path)), ("wrapper", wrapper), ("dtype", dtype),
            ("model", model), ("sha256", sha256(path)), ("size", os.path.getsize(path)),
            ("golden", os.path.relpath(golden, self.out_dir)), ("input_shape", list(in_shape)),
            ("output_shape", list(out_shape)), ("tensors", n_tensors), ("elements", n_elems),
            ("torch_version", torch.__version__), ("torchvision_version", torchvision.__version__),
            ("notes", notes)])
        entry.update(extra)
        self.entries.append(entry)


# ---------------------------------------------------------------- model table

def mini_models():
    """name → (builder, input CHW, seed, description). Widths are reduced; structure and names are not."""
    tv = tv_resnet
    return OrderedDict([
        ("tv-resnet18-mini", (lambda: tv_mini(tv.BasicBlock, [2, 2, 2, 2], base=4), (3, 32, 32), 101,
                              "torchvision ResNet(BasicBlock, [2,2,2,2]) at widths 4/8/16/32, 10 classes")),
        ("tv-resnet50-mini", (lambda: tv_mini(tv.Bottleneck, [2, 1, 1, 1], base=4), (3, 48, 48), 102,
                              "torchvision ResNet(Bottleneck, [2,1,1,1]) at planes 4/8/16/32 (out 16…128), 10 classes")),
        ("tv-resnext-mini", (lambda: tv_mini(tv.Bottleneck, [1, 1, 1, 1], base=4, groups=4, width_per_group=32),
                             (3, 48, 48), 103,
                             "torchvision ResNet(Bottleneck, [1,1,1,1], groups=4, width_per_group=32): grouped 3x3 convs, "
                             "inner width 2·planes, planes 4/8/16/32")),
        ("tv-wide-mini", (lambda: tv_mini(tv.Bottleneck, [1, 1, 1, 1], base=3, width_per_group=128), (3, 48, 48), 104,
                          "torchvision ResNet(Bottleneck, [1,1,1,1], width_per_group=128) (wide_resnet style: inner width "
                          "2·planes), planes 3/6/12/24")),
        ("seed-torch", (lambda: SeedResNet(base=3, num_block=(3, 4, 6, 3)), (3, 32, 32), 105,
                        "the seed's PyTorch ResNet (ResBlock conv→ReLU→BN, conv+ReLU shortcut, conv bias, "
                        "MaxPool(3,2) without padding, classifier) with the seed's num_block [3,4,6,3] at filters "
                        "3·2^k (3/6/12/24) instead of 64·2^k")),
        ("cifar-resnet20-optionA", (lambda: CifarResNet(n=3, width=4, option="A"), (3, 32, 32), 106,
                                    "CIFAR ResNet-20 option A (x[:, :, ::2, ::2] + planes//4 zero channels each side), "
                                    "width 4/8/16, conv bias=False, names conv1/bn1/layer1..3/linear")),
        ("cifar-resnet20-optionB", (lambda: CifarResNet(n=3, width=4, option="B"), (3, 32, 32), 107,
                                    "CIFAR ResNet-20 option B: projection shortcut named `shortcut.0` (1x1 conv, "
                                    "stride 2, no bias) and `shortcut.1` (BN), width 4/8/16")),
    ])


LEGACY_ELEMENT_SIZE = {"FloatStorage": 4, "HalfStorage": 2, "BFloat16Storage": 2, "DoubleStorage": 8,
                       "LongStorage": 8, "IntStorage": 4, "ShortStorage": 2, "ByteStorage": 1, "CharStorage": 1,
                       "BoolStorage": 1}


def legacy_bytes(obj):
    """torch.save(obj, _use_new_zipfile_serialization=False), made reproducible.

    The legacy writer names each storage by its heap address (`str(storage._cdata)`) and writes the
    storages in the sorted order of those names, so both the names and the order change from run to
    run. Here the keys are renamed to same-length decimal strings that increase in order of first use
    in the pickle, and the storage records are put in that order, which is what torch would have
    written had the addresses come out in that order. The pickles are only walked with
    pickletools.genops, never executed.
    """
    buf = io.BytesIO()
    torch.save(obj, buf, _use_new_zipfile_serialization=False)
    data = buf.getvalue()
    stream = io.BytesIO(data)
    for _ in range(3):  # magic, protocol version, sys_info
        for _op in pickletools.genops(stream):
            pass
    main_start = stream.tell()
    main_ops = list(pickletools.genops(stream))
    main_end = stream.tell()
    keys = [arg for op, arg, _ in pickletools.genops(stream) if op.name == "BINUNICODE"]
    storages_start = stream.tell()
    assert keys == sorted(keys) and len({len(k) for k in keys}) == 1, keys
    # Storage class of each key, in order of first use (the class is pushed, possibly from the memo, just before).
    memo, pushed, cls, first = {}, None, None, OrderedDict()
    for op, arg, _ in main_ops:
        if op.name == "GLOBAL":
            pushed = arg
        elif op.name in ("BINPUT", "LONG_BINPUT"):
            memo[arg] = pushed
        elif op.name in ("BINGET", "LONG_BINGET"):
            pushed = memo.get(arg)
        elif op.name == "BINUNICODE":
            if arg in keys and arg not in first:
                first[arg] = cls
            pushed = arg
        else:
            pushed = None
        if isinstance(pushed, str) and pushed.startswith("torch ") and pushed.endswith("Storage"):
            cls = pushed.split(" ")[1]
    assert sorted(first) == keys
    records, pos = {}, storages_start
    for key in keys:
        count = struct.unpack("<q", data[pos:pos + 8])[0]
        end = pos + 8 + count * LEGACY_ELEMENT_SIZE[first[key]]
        records[key] = data[pos:end]
        pos = end
    assert pos == len(data)
    rename = {key: "1%0*d" % (len(key) - 1, (rank + 1) * 4096) for rank, key in enumerate(first)}
    main = data[main_start:main_end]
    for key, new in rename.items():
        old = b"X" + struct.pack("<I", len(key)) + key.encode()
        assert main.count(old) >= 1
        main = main.replace(old, b"X" + struct.pack("<I", len(new)) + new.encode())
    return (data[:main_start] + main + pickle.dumps([rename[k] for k in first], protocol=2)
            + b"".join(records[k] for k in first))


def save(obj, path, legacy=False):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if legacy:
        with open(path, "wb") as f:
            f.write(legacy_bytes(obj))
    else:
        torch.save(obj, path)


def check_file(path, builder, x, y, unwrap, whole=False):
    """Loads what was written with the real torch and requires the golden output bit for bit."""
    if whole:
        model = torch.load(path, weights_only=False)  # our own file, written a moment ago
    else:
        with torch.serialization.safe_globals([np._core.multiarray.scalar, np.dtype, np.dtypes.Float64DType]):
            sd = unwrap(torch.load(path, weights_only=True))
        model = builder()
        model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in sd.items()}, strict=True)
    got = run(model, x)
    if not np.array_equal(got, y):
        raise SystemExit("%s: reloaded output differs from its golden by %g" % (path, np.abs(got - y).max()))


def make_torch_fixtures():
    shutil.rmtree(TORCH_OUT, ignore_errors=True)
    rec = Recorder(TORCH_OUT)
    models = mini_models()
    built = {}
    for name, (builder, shape, seed, desc) in models.items():
        torch.manual_seed(seed)
        model = randomize(builder(), seed)
        x = make_input(shape)
        y = run(model, x)
        folder = os.path.join(TORCH_OUT, name)
        write_golden(folder, x, y)
        built[name] = (model, x, y, folder, builder, desc)

    plain = lambda obj: obj

    def add(path, name, wrapper, sd_for_summary, notes, golden_folder=None, dtype="float32", **extra):
        model, x, y, folder, builder, desc = built[name]
        n, e, dts = describe_sd(sd_for_summary)
        rec.add(path, name, wrapper, dtype if dtype else ",".join(dts), os.path.join(golden_folder or folder, "io.npz"),
                x.shape, y.shape, n, e, [desc] + notes + ([TV_NOTE] if TV_NOTE and name.startswith("tv-") else []),
                stored_dtypes=dts, **extra)

    # Plain zip state dicts, one per model.
    for name, (model, x, y, folder, builder, desc) in built.items():
        sd = model.state_dict()
        path = os.path.join(folder, name + ".pth")
        save(sd, path)
        check_file(path, builder, x, y, plain)
        add(path, name, "state_dict", sd, ["torch.save(model.state_dict())"], key_prefix="")

    # cifar-resnet20-optionA: legacy stream, and a DataParallel training checkpoint.
    model, x, y, folder, builder, _ = built["cifar-resnet20-optionA"]
    sd = model.state_dict()
    path = os.path.join(folder, "legacy.th")
    save(sd, path, legacy=True)
    check_file(path, builder, x, y, plain)
    add(path, "cifar-resnet20-optionA", "state_dict", sd,
        ["torch.save(sd, f, _use_new_zipfile_serialization=False): pre-1.6 stream, _rebuild_tensor_v2; the "
         "storage keys (heap addresses in torch's writer) renamed to same-length decimals in order of first use, "
         "storages in that order, for reproducibility"], key_prefix="")

    dp_sd = nn.DataParallel(model).state_dict()
    path = os.path.join(folder, "checkpoint-dataparallel.th")
    save({"epoch": 3, "best_acc": np.float64(91.2), "state_dict": dp_sd}, path)
    strip = lambda obj: OrderedDict((k[len("module."):], v) for k, v in obj["state_dict"].items())
    check_file(path, builder, x, y, strip)
    add(path, "cifar-resnet20-optionA", "{'epoch', 'best_acc', 'state_dict'}", dp_sd,
        ["nn.DataParallel(model).state_dict(): every key starts with `module.`",
         "best_acc is numpy.float64(91.2): pickled as numpy._core.multiarray.scalar + numpy.dtype + _codecs.encode"],
        key_prefix="module.", checkpoint_keys=["epoch", "best_acc", "state_dict"])

    # cifar-resnet20-optionA: a whole pickled module; its classes are this script's (`__main__.CifarResNet`,
    # `__main__.CifarBlock`, `__main__.ZeroPadShortcut`), as when a user pickles their own model.
    path = os.path.join(folder, "whole-module.pth")
    save(model, path)
    check_file(path, builder, x, y, plain, whole=True)
    add(path, "cifar-resnet20-optionA", "whole nn.Module", model.state_dict(),
        ["torch.save(model): the full module pickle (__main__.CifarResNet/CifarBlock/ZeroPadShortcut, torch.nn "
         "classes, _parameters/_buffers/_modules, an empty nn.Sequential shortcut); torch.load needs "
         "weights_only=False and this script's classes"], key_prefix="")

    # cifar-resnet20-optionB: {'model', 'optimizer'} and the tutorial's {'model_state_dict', …}.
    model, x, y, folder, builder, _ = built["cifar-resnet20-optionB"]
    sd = model.state_dict()
    twin = copy.deepcopy(model)
    opt = torch.optim.SGD(twin.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    twin(torch.from_numpy(x)).logsumexp(1).sum().backward()
    opt.step()
    path = os.path.join(folder, "checkpoint-model-optimizer.pth")
    save({"model": sd, "optimizer": opt.state_dict()}, path)
    check_file(path, builder, x, y, lambda obj: obj["model"])
    add(path, "cifar-resnet20-optionB", "{'model', 'optimizer'}", sd,
        ["optimizer: SGD(momentum=0.9) state after one step taken on a copy (float32 momentum buffers keyed by "
         "parameter index, same shapes as the weights); the saved weights are the pre-step ones the golden uses"],
        key_prefix="", checkpoint_keys=["model", "optimizer"])

    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    path = os.path.join(folder, "checkpoint-model-state-dict.pt")
    save({"epoch": 12, "model_state_dict": sd, "optimizer_state_dict": opt.state_dict(), "loss": 0.734}, path)
    check_file(path, builder, x, y, lambda obj: obj["model_state_dict"])
    add(path, "cifar-resnet20-optionB", "{'epoch', 'model_state_dict', 'optimizer_state_dict', 'loss'}", sd,
        ["optimizer_state_dict has no per-parameter state (plain SGD, never stepped)"], key_prefix="",
        checkpoint_keys=["epoch", "model_state_dict", "optimizer_state_dict", "loss"])

    # Reduced-precision files: the golden is the float32 model built from the rounded weights.
    for name, dtype, tdtype in [("tv-resnet50-mini", "float16", torch.float16),
                                ("cifar-resnet20-optionB", "bfloat16", torch.bfloat16)]:
        model, _, _, _, builder, _ = built[name]
        low = copy.deepcopy(model).to(tdtype)
        low_sd = low.state_dict()
        back = builder()
        back.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in low_sd.items()}, strict=True)
        unwrap, prefix, extra_note = plain, "", []
        if dtype == "bfloat16":
            # This file also carries torch.compile's wrapper (the real OptimizedModule, never called, so
            # nothing is compiled): every key starts with `_orig_mod.`.
            low_sd = torch.compile(low).state_dict()
            unwrap, prefix = (lambda obj: OrderedDict((k[len("_orig_mod."):], v) for k, v in obj.items())), "_orig_mod."
            extra_note = ["saved as torch.compile(model.to(torch.bfloat16)).state_dict(): every key starts with "
                          "`_orig_mod.`"]
        x = built[name][1]
        y = run(back, x)
        folder = os.path.join(TORCH_OUT, "%s-%s" % (name, "fp16" if dtype == "float16" else "bf16"))
        write_golden(folder, x, y)
        path = os.path.join(folder, "%s-%s.pth" % (name, "fp16" if dtype == "float16" else "bf16"))
        save(low_sd, path)
        check_file(path, builder, x, y, unwrap)
        rec.add(path, name, "state_dict", dtype, os.path.join(folder, "io.npz"), x.shape, y.shape,
                *describe_sd(low_sd)[:2],
                [built[name][5], "model.to(%s).state_dict(): weights and BN statistics stored as %s "
                 "(num_batches_tracked stays int64); the golden is the float32 model loaded from these rounded "
                 "weights, not the original float32 model" % (tdtype, dtype)] + extra_note,
                stored_dtypes=describe_sd(low_sd)[2], key_prefix=prefix)

    manifest = OrderedDict([
        ("generator", "tools/make_torch_fixtures.py"),
        ("torch_version", torch.__version__), ("torchvision_version", torchvision.__version__),
        ("numpy_version", np.__version__),
        ("input", "numpy.random.default_rng(%d).standard_normal((2, C, H, W)).astype(float32), NCHW, fed as is"
         % INPUT_SEED),
        ("output", "model.eval()(x) under torch.no_grad(), float32; every file was reloaded with torch.load and "
                   "reproduced its golden bit for bit"),
        ("weights", "random: conv N(0, 2/fan_in), conv bias N(0, 0.1^2), BN gamma U(0.5, 1.5), beta N(0, 0.2^2), "
                    "running_mean N(0, 0.5^2), running_var U(0.5, 2), linear N(0, 1/in), bias N(0, 0.1^2); "
                    "fixed seed per model"),
        ("bn_eps", 1e-5),
        ("files", rec.entries)])
    with open(os.path.join(TORCH_OUT, "MANIFEST.json"), "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")
    lines = ["# PyTorch fixtures made by the real torch",
             "",
             "Written by `tools/make_torch_fixtures.py` (torch %s, torchvision %s). Random weights and randomised BN"
             % (torch.__version__, torchvision.__version__),
             "statistics; `io.npz` in each folder holds `input` (2, C, H, W) float32, `output` = `model.eval()(input)`",
             "float32 and `layout` = 'NCHW', valid for every weight file in that folder. `MANIFEST.json` has the details",
             "(sha256, tensor counts, stored dtypes, key prefix, notes).",
             "",
             "| file | container | wrapper | dtype | key prefix | size |",
             "|---|---|---|---|---|---|"]
    for e in rec.entries:
        lines.append("| `%s` | %s | %s | %s | %s | %d |" % (e["path"], e["container"], e["wrapper"], e["dtype"],
                                                         "`%s`" % e["key_prefix"] if e["key_prefix"] else "none",
                                                         e["size"]))
    with open(os.path.join(TORCH_OUT, "README.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    return rec.entries


# ---------------------------------------------------------------- hostile corpus (never loaded)

def op_global(module, name):
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def op_str(s):
    data = s.encode()
    return b"X" + struct.pack("<I", len(data)) + data


def op_short_str(s):
    data = s.encode()
    assert len(data) < 256
    return b"\x8c" + bytes([len(data)]) + data


def op_stack_global(module, name):
    return op_short_str(module) + op_short_str(name) + b"\x93"


def frame(body):
    """Protocol 4: a FRAME around the body, as the real pickler writes it."""
    return b"\x80\x04\x95" + struct.pack("<Q", len(body) + 1) + body + b"."


def shell(name):
    return "touch " + MARKER + name


def argv_list(name):
    return b"]" + b"(" + op_str("touch") + op_str(MARKER + name) + b"e"  # EMPTY_LIST MARK … APPENDS


class Evil:
    """Pickles as posix.system(cmd), the way a crafted __reduce__ does; the object never runs here."""

    def __init__(self, cmd):
        self.cmd = cmd

    def __reduce__(self):
        return (os.system, (self.cmd,))


def hostile_pickles():
    """name → (pickle bytes, what it tries, the global a reader must name when refusing)."""
    p = OrderedDict()
    p["global-os-system"] = (
        b"\x80\x02" + op_global("os", "system") + op_str(shell("global-os-system")) + b"\x85R.",
        "GLOBAL os.system + REDUCE", "os.system")
    p["reduce-posix-system"] = (
        pickle.dumps(Evil(shell("reduce-posix-system")), protocol=2),
        "pickle.dumps of an object whose __reduce__ returns os.system (written as posix.system), REDUCE",
        "posix.system")
    p["stack-global-builtins-eval"] = (
        frame(op_stack_global("builtins", "eval")
              + op_short_str("__import__('os').system('%s')" % shell("stack-global-builtins-eval")) + b"\x85R"),
        "protocol 4 STACK_GLOBAL builtins.eval + REDUCE", "builtins.eval")
    p["global-py2-builtin-eval"] = (
        b"\x80\x02" + op_global("__builtin__", "eval")
        + op_str("__import__('os').system('%s')" % shell("global-py2-builtin-eval")) + b"\x85R.",
        "GLOBAL __builtin__.eval (Python's fix_imports maps it to builtins.eval) + REDUCE", "__builtin__.eval")
    p["global-subprocess-popen"] = (
        b"\x80\x02" + op_global("subprocess", "Popen") + argv_list("global-subprocess-popen") + b"\x85R.",
        "GLOBAL subprocess.Popen(['touch', marker]) + REDUCE", "subprocess.Popen")
    p["stack-global-subprocess-call"] = (
        frame(op_stack_global("subprocess", "call") + argv_list("stack-global-subprocess-call") + b"\x85R"),
        "STACK_GLOBAL subprocess.call(['touch', marker]) + REDUCE", "subprocess.call")
    p["global-import-os-system"] = (
        b"\x80\x02" + op_global("builtins", "getattr") + op_global("builtins", "__import__") + op_str("os")
        + b"\x85R" + op_str("system") + b"\x86R" + op_str(shell("global-import-os-system")) + b"\x85R.",
        "getattr(__import__('os'), 'system')(cmd) through GLOBAL + REDUCE", "builtins.getattr")
    p["inst-os-system"] = (
        b"(V" + shell("inst-os-system").encode() + b"\nios\nsystem\n.",
        "protocol 0 INST os.system with the command as its argument", "os.system")
    p["obj-posix-system"] = (
        b"\x80\x02(" + op_global("posix", "system") + op_str(shell("obj-posix-system")) + b"o.",
        "OBJ: MARK, GLOBAL posix.system, argument, OBJ", "posix.system")
    p["global-numpy-runstring"] = (
        b"\x80\x02" + op_global("numpy.testing._private.utils", "runstring")
        + op_str("import os; os.system('%s')" % shell("global-numpy-runstring")) + b"}\x86R.",
        "a numpy global that is not a scalar/dtype: numpy.testing runstring executes code", "numpy.testing._private.utils.runstring")
    inner = pickle.dumps(Evil(shell("global-torch-load-from-bytes")), protocol=2)
    p["global-torch-load-from-bytes"] = (
        b"\x80\x03" + op_global("torch.storage", "_load_from_bytes") + b"B" + struct.pack("<I", len(inner)) + inner
        + b"\x85R.",
        "a torch global outside the allow-list: torch.storage._load_from_bytes runs torch.load(weights_only=False) "
        "on embedded bytes that are a posix.system pickle", "torch.storage._load_from_bytes")
    # Structural attacks (no global at all, or only allowed ones).
    p["cyclic-list"] = (pickle.dumps(_cyclic_list(), protocol=2),
                        "a list that contains itself through the memo (EMPTY_LIST, BINPUT 0, BINGET 0, APPEND)", None)
    p["memo-undefined"] = (b"\x80\x02]q\x00h\x05a.", "BINGET of a memo slot that was never set", None)
    p["memo-huge-index"] = (b"\x80\x02]r\xf0\xff\xff\xffj\xf0\xff\xff\xff0.",
                            "LONG_BINPUT/LONG_BINGET at index 0xFFFFFFF0 (an array-backed memo would allocate 4G slots)", None)
    p["string-length-huge"] = (b"\x80\x02X\xff\xff\xff\xffabc.",
                               "BINUNICODE declaring 4 GiB of text with 3 bytes present", None)
    p["bytes8-length-huge"] = (b"\x80\x04\x8e" + struct.pack("<Q", 1 << 62) + b"abc.",
                               "BINBYTES8 declaring 2^62 bytes", None)
    p["deep-nesting"] = (b"\x80\x02)" + b"\x85" * 100000 + b".",
                         "100,000 tuples nested inside each other (EMPTY_TUPLE, then TUPLE1 ×100000)", None)
    return p


# Deliberately not well-formed pickles (pickletools.dis rejects them too, which is the point).
MALFORMED = {"memo-undefined", "string-length-huge", "bytes8-length-huge"}


def _cyclic_list():
    a = []
    a.append(a)
    return a


def tiny_archive(stem, obj):
    """A real torch zip archive (root folder = stem) holding obj, as bytes."""
    tmp = tempfile.mkdtemp()
    try:
        path = os.path.join(tmp, stem + ".pt")
        torch.save(obj, path)
        with open(path, "rb") as f:
            return f.read()
    finally:
        shutil.rmtree(tmp)


def replace_data_pkl(archive, new_pkl):
    """Rewrites a torch zip with the same members in the same order, data.pkl replaced (stored, no alignment)."""
    src = zipfile.ZipFile(io.BytesIO(archive))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            data = new_pkl if info.filename.endswith("/data.pkl") else src.read(info.filename)
            dst.writestr(zipfile.ZipInfo(info.filename, date_time=ZIP_TIME), data)
    return out.getvalue()


def central_entries(buf):
    """(name, central-header offset) for every member, read from the end-of-central-directory record."""
    eocd = buf.rfind(b"PK\x05\x06")
    count, _, cd_off = struct.unpack("<HII", buf[eocd + 10:eocd + 20])
    assert cd_off != 0xFFFFFFFF
    entries, pos = [], cd_off
    for _ in range(count):
        assert buf[pos:pos + 4] == b"PK\x01\x02"
        nlen, elen, clen = struct.unpack("<HHH", buf[pos + 28:pos + 34])
        entries.append((buf[pos + 46:pos + 46 + nlen].decode(), pos))
        pos += 46 + nlen + elen + clen
    return entries


def legacy_stream(main_pickle, sys_info_pickle=None, keys=(), storages=b""):
    """A pre-1.6 torch stream: magic, protocol version, sys_info, the object, the storage keys, storages."""
    magic = pickle.dumps(0x1950a86a20f9469cfc6c, protocol=2)
    version = pickle.dumps(1001, protocol=2)
    sys_info = sys_info_pickle or pickle.dumps(
        {"protocol_version": 1001, "little_endian": True, "type_sizes": {"short": 2, "int": 4, "long": 4}}, protocol=2)
    return magic + version + sys_info + main_pickle + pickle.dumps(list(keys), protocol=2) + storages


def make_hostile():
    shutil.rmtree(HOSTILE_OUT, ignore_errors=True)
    os.makedirs(os.path.join(HOSTILE_OUT, "pickles"))
    rows = []

    def write(rel, data, tries, refusal, marker=None, global_name=None):
        path = os.path.join(HOSTILE_OUT, rel)
        with open(path, "wb") as f:
            f.write(data)
        rows.append(OrderedDict([("file", rel), ("size", len(data)), ("sha256", hashlib.sha256(data).hexdigest()),
                                 ("tries", tries), ("expected", refusal), ("marker", marker),
                                 ("global", global_name)]))

    base_obj = OrderedDict([("conv1.weight", torch.zeros(2, 3, 1, 1))])
    for name, (data, tries, glob) in hostile_pickles().items():
        if name not in MALFORMED:
            pickletools.dis(data, out=io.StringIO())  # well-formed opcode stream, checked without executing it
        marker = MARKER + name if glob else None
        refusal = ("exit 3; error names the global `%s`; nothing executed; no output file" % glob if glob else
                   "exit 3; error names the reason (%s); no output file" % _structural_reason(name))
        if name != "deep-nesting":  # 100 KB; its zip copy below is the one to use
            write("pickles/%s.pkl" % name, data, "bare pickle: " + tries, refusal, marker, glob)
        write("%s.pt" % name, replace_data_pkl(tiny_archive(name, base_obj), data),
              "torch zip whose data.pkl is: " + tries, refusal, marker, glob)

    # Written by torch itself: an otherwise valid checkpoint with one value that reduces to posix.system.
    for legacy in (False, True):
        name = "torch-%s-evil-value" % ("legacy" if legacy else "zip")
        obj = {"state_dict": base_obj, "best_acc": Evil(shell(name))}
        if legacy:
            data = legacy_bytes(obj)
        else:
            buf = io.BytesIO()
            torch.save(obj, buf)
            data = buf.getvalue()
        write(name + ".pt", data,
              "a checkpoint written by torch.save (%s) whose 'best_acc' value reduces to posix.system, after a "
              "valid state_dict" % ("legacy stream" if legacy else "zip"),
              "exit 3; error names the global `posix.system`; nothing executed; no output file", MARKER + name,
              "posix.system")

    name = "legacy-evil-sys-info"
    write(name + ".pt", legacy_stream(pickle.dumps({}, protocol=2),
                                      sys_info_pickle=pickle.dumps(Evil(shell(name)), protocol=2)),
          "legacy stream whose sys_info pickle (read before the object) reduces to posix.system",
          "exit 3; error names the global `posix.system`; nothing executed; no output file", MARKER + name,
          "posix.system")

    # Containers that lie about their bytes.
    good = tiny_archive("zip-offsets", OrderedDict([("conv1.weight", torch.arange(64.0).reshape(4, 4, 2, 2))]))
    for name, field, what in [("zip-offset-outside", 42, "the central directory's local-header offset of data/0"),
                              ("zip-size-outside", 20, "the central directory's compressed size of data/0")]:
        buf = bytearray(good)
        for member, pos in central_entries(bytes(buf)):
            if member.endswith("/data/0"):
                struct.pack_into("<I", buf, pos + field, len(buf) + 1000 if field == 42 else 0x7FFFFF00)
                if field == 20:
                    struct.pack_into("<I", buf, pos + 24, 0x7FFFFF00)
        write(name + ".pt", bytes(buf), "%s points past the end of the file" % what,
              "exit 3; error names the member and the offset/size that is outside the file; no output file")
    write("zip-truncated.pt", good[:len(good) // 2], "a valid torch zip cut in half (no end-of-central-directory)",
          "exit 3; error says the zip is truncated / has no central directory; no output file")

    huge = 1 << 40
    write("zip-storage-larger-than-file.pt",
          replace_data_pkl(good, _tensor_pickle("conv1.weight", huge, (huge,), (1,))),
          "data.pkl declares a FloatStorage of 2^40 elements; data/0 holds 64 floats",
          "exit 3; error names the tensor, the declared size and the member's size; nothing allocated; no output file")
    write("zip-view-outside-storage.pt",
          replace_data_pkl(good, _tensor_pickle("conv1.weight", 64, (64, 64), (64, 1), offset=8)),
          "a tensor of 64x64 (offset 8) over a 64-element storage",
          "exit 3; error names the tensor, its extent and the storage size; no output file")
    legacy_good = legacy_bytes(OrderedDict([("conv1.weight", torch.arange(64.0))]))
    legacy = bytearray(legacy_good)
    assert struct.unpack("<q", legacy[-(8 + 256):-256])[0] == 64  # the storage header: element count, then bytes
    struct.pack_into("<q", legacy, len(legacy) - (8 + 256), huge)
    write("legacy-storage-larger-than-file.pt", bytes(legacy),
          "legacy stream whose storage header declares 2^40 elements; 256 bytes follow",
          "exit 3; error names the storage key, the declared count and the bytes left; nothing allocated; no output file")
    write("legacy-truncated.pt", legacy_good[:-100],
          "a valid legacy stream with its last 100 storage bytes cut off",
          "exit 3; error says the storage is truncated; no output file")

    cyc = OrderedDict()
    cyc["conv1.weight"] = torch.zeros(1)
    cyc["self"] = cyc
    write("torch-zip-cyclic-dict.pt", tiny_archive("torch-zip-cyclic-dict", cyc),
          "a state dict written by torch.save that contains itself under the key 'self' (memo cycle)",
          "exit 3; error names the key 'self' (not a tensor) or the cycle; terminates; no output file")

    with open(os.path.join(HOSTILE_OUT, "EXPECTED.json"), "w") as f:
        json.dump({"marker_prefix": MARKER, "files": rows}, f, indent=1)
        f.write("\n")
    write_hostile_readme(rows)
    return rows


def _structural_reason(name):
    return {"cyclic-list": "a cycle / value is not a state dict",
            "memo-undefined": "memo index 5 was never set",
            "memo-huge-index": "memo index beyond the limit",
            "string-length-huge": "declared length runs past the end",
            "bytes8-length-huge": "declared length runs past the end / beyond the limit",
            "deep-nesting": "nesting deeper than the limit"}[name]


def _tensor_pickle(key, numel, size, stride, offset=0):
    """data.pkl for {key: tensor} with the storage and view numbers given, using only allowed globals."""
    def num(v):
        return b"\x8a" + bytes([8]) + struct.pack("<q", v) if v > 0x7FFFFFFF else b"J" + struct.pack("<i", v)

    tup = lambda items: b"(" + b"".join(items) + b"t"
    storage = tup([op_str("storage"), op_global("torch", "FloatStorage"), op_str("0"), op_str("cpu"), num(numel)])
    args = tup([storage + b"Q", num(offset), tup([num(s) for s in size]), tup([num(s) for s in stride]), b"\x89",
                op_global("collections", "OrderedDict") + b")R"])
    return (b"\x80\x02" + op_global("collections", "OrderedDict") + b")R(" + op_str(key)
            + op_global("torch._utils", "_rebuild_tensor_v2") + args + b"Ru.")


def write_hostile_readme(rows):
    lines = [
        "# Hostile PyTorch files",
        "",
        "Made by `tools/make_torch_fixtures.py`; **never load these with `pickle` or `torch.load`**. Each file that",
        "tries to run something would create `/tmp/resnet-convert-pwned-<name>`; tests check that the marker never",
        "appears. `pickles/*.pkl` are the bare pickles (for unit tests of the pickle machine); `<name>.pt` is the",
        "same pickle as `data.pkl` inside a torch zip (members copied from a real `torch.save` archive, rewritten",
        "stored and unaligned); `deep-nesting` exists only as `.pt` (100 KB). `torch-*` files were written by",
        "`torch.save` itself; `legacy-*` are pre-1.6 streams; `zip-*` are real archives with one thing broken.",
        "`EXPECTED.json` has the same table with sizes, sha256, marker path and the global a refusal must name.",
        "",
        "Expected for every file: `resnet-convert` exits 3, writes no output file, executes nothing.",
        "",
        "| file | size | what it tries | expected refusal |",
        "|---|---|---|---|",
    ]
    for r in rows:
        lines.append("| `%s` | %d | %s | %s |" % (r["file"], r["size"], r["tries"], r["expected"]))
    with open(os.path.join(HOSTILE_OUT, "README.md"), "w") as f:
        f.write("\n".join(lines) + "\n")


# ---------------------------------------------------------------- full size (outside the repo)

def make_full(out_dir):
    tv = tv_resnet
    table = [("resnet18", lambda: tv.resnet18(weights=None), 201),
             ("resnet50", lambda: tv.resnet50(weights=None), 202),
             ("wide_resnet50_2", lambda: tv.wide_resnet50_2(weights=None), 203),
             ("resnext50_32x4d", lambda: tv.resnext50_32x4d(weights=None), 204),
             ("seed-torch", lambda: SeedResNet(base=64, num_block=(3, 4, 6, 3), num_classes=10), 205)]
    os.makedirs(out_dir, exist_ok=True)
    rec = Recorder(out_dir)
    x = make_input((3, 224, 224))
    for name, builder, seed in table:
        t0 = time.time()
        model = randomize(builder(), seed)
        t1 = time.time()
        y = run(model, x)
        t2 = time.time()
        folder = os.path.join(out_dir, name)
        write_golden(folder, x, y)
        path = os.path.join(folder, name + ".pth")
        sd = model.state_dict()
        save(sd, path)
        t3 = time.time()
        check_file(path, builder, x, y, lambda obj: obj)
        n, e, dts = describe_sd(sd)
        rec.add(path, name, "state_dict", "float32", os.path.join(folder, "io.npz"), x.shape, y.shape, n, e,
                ["full size, random weights and BN statistics (seed %d)" % seed] + ([TV_NOTE] if TV_NOTE else []),
                seconds=OrderedDict([("build+randomize", round(t1 - t0, 2)), ("forward", round(t2 - t1, 2)),
                                     ("save", round(t3 - t2, 2))]))
        print("%-18s %10d bytes  %d tensors  forward %.2fs" % (name, os.path.getsize(path), n, t2 - t1))
    with open(os.path.join(out_dir, "MANIFEST.json"), "w") as f:
        json.dump({"generator": "tools/make_torch_fixtures.py --full", "torch_version": torch.__version__,
                   "files": rec.entries}, f, indent=1)
        f.write("\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--full", metavar="OUTDIR", help="write full-size models + goldens into OUTDIR instead")
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.full:
        if os.path.abspath(args.full).startswith(ROOT + os.sep):
            sys.exit("--full writes hundreds of MB; give a directory outside the repository")
        make_full(args.full)
        return
    entries = make_torch_fixtures()
    rows = make_hostile()
    total = 0
    for e in entries:
        total += e["size"]
        print("%-62s %8d  %s" % (e["path"], e["size"], e["wrapper"]))
    print("torch fixtures: %d files, %d bytes of weights" % (len(entries), total))
    print("hostile: %d files, %d bytes" % (len(rows), sum(r["size"] for r in rows)))


if __name__ == "__main__":
    main()
