#!/usr/bin/env python3
"""Writes small PyTorch checkpoints in the layouts training code saves (fixtures/torch/checkpoints/).

Standard library only: torch is not imported. The classes and functions a real checkpoint names
(`torch._utils._rebuild_tensor_v2`, `torch.FloatStorage`, `torch.nn.modules.conv.Conv2d`,
Lightning's `AttributeDict`, numpy's `_reconstruct` …) are stand-ins registered under the same
module and class names, so `pickle` writes the same opcodes and globals the real objects produce.
The stand-ins are only ever pickled here, never unpickled. The weights are tiny and made up; the
tests check which entry the reader takes and what it reports, not a forward pass.

    python3 tools/make_checkpoint_layouts.py        # writes fixtures/torch/checkpoints/*
"""
import argparse
import collections
import datetime
import io
import os
import pathlib
import pickle
import struct
import sys
import types
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "fixtures", "torch", "checkpoints")


# ---------------------------------------------------------------- stand-ins named like the real ones

def _module(name):
    parts = name.split(".")
    for i in range(1, len(parts) + 1):
        sub = ".".join(parts[:i])
        if sub not in sys.modules:
            sys.modules[sub] = types.ModuleType(sub)
            if i > 1:
                setattr(sys.modules[".".join(parts[:i - 1])], parts[i - 1], sys.modules[sub])
    return sys.modules[name]


def named(module, name, obj):
    """Registers `obj` as `module.name`, so pickle writes that global for it."""
    obj.__module__ = module
    obj.__qualname__ = name
    obj.__name__ = name
    setattr(_module(module), name, obj)
    return obj


def _rebuild_tensor_v2(*args):
    raise RuntimeError("stand-in: never called")


def _rebuild_parameter(*args):
    raise RuntimeError("stand-in: never called")


def _reconstruct(*args):
    raise RuntimeError("stand-in: never called")


named("torch._utils", "_rebuild_tensor_v2", _rebuild_tensor_v2)
named("torch._utils", "_rebuild_parameter", _rebuild_parameter)
named("numpy.core.multiarray", "_reconstruct", _reconstruct)
FloatStorage = named("torch", "FloatStorage", type("FloatStorage", (), {}))
LongStorage = named("torch", "LongStorage", type("LongStorage", (), {}))
NDArray = named("numpy", "ndarray", type("ndarray", (), {}))


class Storage:
    def __init__(self, key, kind, values):
        self.key, self.kind, self.values = key, kind, values

    def raw(self):
        fmt = "<%d%s" % (len(self.values), "f" if self.kind is FloatStorage else "q")
        return struct.pack(fmt, *self.values)


class Tensor:
    """A contiguous tensor on its own storage, pickled the way torch pickles one."""

    def __init__(self, archive, shape, values=None, kind=FloatStorage, parameter=False):
        n = 1
        for d in shape:
            n *= d
        if values is None:
            values = [((archive.counter * 7 + i * 3) % 11 - 5) / 8.0 for i in range(n)]
        if kind is LongStorage:
            values = [int(v) for v in values]
        self.storage = archive.storage(kind, values)
        self.shape = tuple(shape)
        stride, acc = [], 1
        for d in reversed(shape):
            stride.insert(0, acc)
            acc *= d
        self.stride = tuple(stride)
        self.parameter = parameter

    def __reduce_ex__(self, protocol):
        plain = (_rebuild_tensor_v2, (self.storage, 0, self.shape, self.stride, False, collections.OrderedDict()))
        if not self.parameter:
            return plain
        inner = Tensor.__new__(Tensor)
        inner.__dict__.update(self.__dict__, parameter=False)
        return (_rebuild_parameter, (inner, True, collections.OrderedDict()))


class Archive:
    def __init__(self):
        self.storages = []
        self.counter = 0

    def storage(self, kind, values):
        s = Storage(str(len(self.storages)), kind, values)
        self.storages.append(s)
        self.counter += 1
        return s

    def tensor(self, *shape, **kw):
        return Tensor(self, shape, **kw)

    def scalar(self, value):
        return Tensor(self, (), values=[value])

    def write(self, path, obj, root="archive"):
        buf = io.BytesIO()

        class P(pickle.Pickler):
            def persistent_id(self, o):
                if isinstance(o, Storage):
                    return ("storage", o.kind, o.key, "cpu", len(o.values))
                return None

        P(buf, protocol=2).dump(obj)
        # A fixed timestamp keeps the files byte-identical from run to run, as torch's writer does.
        def put(z, name, data):
            z.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), data)

        with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
            put(z, f"{root}/data.pkl", buf.getvalue())
            put(z, f"{root}/byteorder", "little")
            for s in self.storages:
                put(z, f"{root}/data/{s.key}", s.raw())
            put(z, f"{root}/version", "3\n")


def state_dict(a, prefix=""):
    """A tiny conv → BN → fc model's state dict (8 entries, one of them the BN step counter)."""
    sd = collections.OrderedDict()
    sd[prefix + "conv1.weight"] = a.tensor(2, 1, 1, 1)
    sd[prefix + "bn1.weight"] = a.tensor(2)
    sd[prefix + "bn1.bias"] = a.tensor(2)
    sd[prefix + "bn1.running_mean"] = a.tensor(2)
    sd[prefix + "bn1.running_var"] = a.tensor(2, values=[1.0, 2.0])
    sd[prefix + "bn1.num_batches_tracked"] = Tensor(a, (), values=[7], kind=LongStorage)
    sd[prefix + "fc.weight"] = a.tensor(3, 2)
    sd[prefix + "fc.bias"] = a.tensor(3)
    return sd


def sgd_state(a):
    return {"state": {0: {"momentum_buffer": a.tensor(2, 1, 1, 1)}, 1: {"momentum_buffer": a.tensor(2)}},
            "param_groups": [{"lr": 0.1, "momentum": 0.9, "weight_decay": 1e-4, "nesterov": False, "params": [0, 1, 2, 3, 4]}]}


# Data classes a checkpoint carries beside the weights, under their real names.
class AttributeDict(dict):
    pass


named("lightning.fabric.utilities.data", "AttributeDict", AttributeDict)


class TorchVersion(str):
    pass


named("torch.torch_version", "TorchVersion", TorchVersion)


class TrainerFn:
    """Pickles like a member of Lightning's `TrainerFn` str enum: `(cls, (value,))`."""

    def __init__(self, value):
        self.value = value

    def __reduce__(self):
        return (TrainerFn, (self.value,))


named("lightning.pytorch.trainer.states", "TrainerFn", TrainerFn)


class NumpyDType:
    def __init__(self, code):
        self.code = code

    def __reduce__(self):
        return (NumpyDType, (self.code, False, True), (3, "<", None, None, None, -1, -1, 0))


named("numpy", "dtype", NumpyDType)


class NumpyArray:
    def __init__(self, shape, values):
        self.shape, self.values = shape, values

    def __reduce__(self):
        raw = struct.pack("<%dd" % len(self.values), *self.values)
        return (_reconstruct, (NDArray, (0,), b"b"), (1, self.shape, NumpyDType("f8"), False, raw))


def _scalar(*args):
    raise RuntimeError("stand-in: never called")


named("numpy.core.multiarray", "scalar", _scalar)


class NumpyScalar:
    def __init__(self, value):
        self.value = value

    def __reduce__(self):
        return (_scalar, (NumpyDType("f8"), struct.pack("<d", self.value)))


# nn.Module stand-ins: instances pickle as NEWOBJ + BUILD of their attribute dict, as nn.Module does.
MODULE_PATHS = {
    "Conv2d": "torch.nn.modules.conv", "BatchNorm2d": "torch.nn.modules.batchnorm", "ReLU": "torch.nn.modules.activation",
    "MaxPool2d": "torch.nn.modules.pooling", "AdaptiveAvgPool2d": "torch.nn.modules.pooling", "Flatten": "torch.nn.modules.flatten",
    "Dropout": "torch.nn.modules.dropout", "Linear": "torch.nn.modules.linear", "Identity": "torch.nn.modules.linear",
    "Sequential": "torch.nn.modules.container", "DataParallel": "torch.nn.parallel.data_parallel",
}
CLASSES = {}


def module_class(name, path=None):
    key = (path or MODULE_PATHS[name], name)
    if key not in CLASSES:
        CLASSES[key] = named(key[0], name, type(name, (), {}))
    return CLASSES[key]


def module(cls_name, params=(), buffers=(), children=(), path=None, **hyper):
    m = module_class(cls_name, path)()
    m.__dict__.update({
        "training": False,
        "_parameters": collections.OrderedDict(params),
        "_buffers": collections.OrderedDict(buffers),
        "_non_persistent_buffers_set": set(),
        "_modules": collections.OrderedDict(children),
    })
    m.__dict__.update(hyper)
    return m


def whole_module(a):
    conv = module("Conv2d", [("weight", a.tensor(4, 3, 3, 3, parameter=True)), ("bias", None)], in_channels=3, out_channels=4,
                  kernel_size=(3, 3), stride=(2, 2), padding=(1, 1), dilation=(1, 1), groups=1, padding_mode="zeros")
    bn = module("BatchNorm2d", [("weight", a.tensor(4, parameter=True)), ("bias", a.tensor(4, parameter=True))],
                [("running_mean", a.tensor(4)), ("running_var", a.tensor(4, values=[1.0, 1.5, 2.0, 2.5])),
                 ("num_batches_tracked", Tensor(a, (), values=[3], kind=LongStorage))],
                num_features=4, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True)
    relu = module("ReLU", inplace=True)
    pool = module("MaxPool2d", kernel_size=3, stride=2, padding=1, dilation=1, ceil_mode=False)
    body = module("Sequential", children=[("0", conv), ("1", bn), ("2", relu), ("3", pool)])
    head = module("Sequential", children=[
        ("0", module("AdaptiveAvgPool2d", output_size=(1, 1))),
        ("1", module("Flatten", start_dim=1, end_dim=-1)),
        ("2", module("Dropout", p=0.2, inplace=False)),
        ("3", module("Linear", [("weight", a.tensor(10, 4, parameter=True)), ("bias", a.tensor(10, parameter=True))],
                     in_features=4, out_features=10)),
    ])
    net = module("Net", children=[("stem", body), ("skip", module("Identity")), ("head", head)], path="__main__")
    return module("DataParallel", children=[("module", net)], dim=0, device_ids=[0], output_device=0)


def shared_dag(a, depth=40):
    """Each level registers the next one twice: 2**depth paths, `depth` distinct modules."""
    leaf = module("Linear", [("weight", a.tensor(1, 1, parameter=True)), ("bias", None)], in_features=1, out_features=1)
    node = leaf
    for _ in range(depth - 1):
        node = module("Sequential", children=[("0", node), ("1", node)])
    # A parameter on the root keeps the keys from sharing a prefix.
    return module("Sequential", [("scale", a.tensor(1, parameter=True))], children=[("0", node), ("1", node)])


# ---------------------------------------------------------------- layouts

def layouts():
    out = {}

    a = Archive()
    out["plain-state-dict.pth"] = (a, state_dict(a), "plain OrderedDict state dict (torch.save(model.state_dict()))")

    a = Archive()
    out["pytorch-examples.pth.tar"] = (a, {
        "epoch": 90, "arch": "resnet18", "state_dict": state_dict(a, "module."), "best_acc1": a.scalar(69.76),
        "optimizer": sgd_state(a),
    }, "pytorch/examples imagenet: {epoch, arch, state_dict (module.), best_acc1 0-d tensor, optimizer}")

    a = Archive()
    out["lightning.ckpt"] = (a, {
        "epoch": 3, "global_step": 400, "pytorch-lightning_version": "2.1.0",
        "state_dict": state_dict(a, "model."),
        "loops": {"fit_loop": {"state_dict": {}, "epoch_progress": {"total": {"ready": 4, "completed": 3}}}},
        "callbacks": {"ModelCheckpoint{'monitor': 'val_acc', 'mode': 'max', 'every_n_train_steps': 0}": {
            "monitor": "val_acc", "best_model_score": a.scalar(0.91), "best_model_path": "/runs/epoch=3.ckpt",
            "best_k_models": {"/runs/epoch=3.ckpt": a.scalar(0.91)}}},
        "optimizer_states": [sgd_state(a)],
        "lr_schedulers": [{"milestones": collections.Counter({100: 1, 150: 1}), "gamma": 0.1, "base_lrs": [0.1],
                           "last_epoch": 3, "_step_count": 4}],
        "hparams_name": "kwargs",
        "hyper_parameters": AttributeDict(model_name="ResNet", num_blocks=[3, 3, 3], lr=0.1),
        "state": {"fn": TrainerFn("fit")},
        "torch_version": TorchVersion("2.1.0"),
    }, "Lightning: state_dict (model.), loops, callbacks (0-d tensors), optimizer_states, lr_schedulers (Counter), "
       "hyper_parameters (AttributeDict), an enum member, a TorchVersion")

    a = Archive()
    args = argparse.Namespace(model="resnet18", data_dir=pathlib.PurePosixPath("/data/imagenet"), lr=0.1,
                              started=datetime.datetime(2024, 5, 1, 12, 30), warmup=datetime.timedelta(hours=1),
                              mean=NumpyArray((3,), [0.485, 0.456, 0.406]))
    out["timm-train.pth.tar"] = (a, {
        "epoch": 10, "arch": "resnet18", "state_dict": state_dict(a), "optimizer": sgd_state(a), "version": 2,
        "args": args, "metric": NumpyScalar(71.25), "state_dict_ema": state_dict(a),
    }, "timm train.py: state_dict + state_dict_ema, optimizer, args (Namespace with a path, datetimes, a numpy array), "
       "version, metric (numpy scalar)")

    a = Archive()
    out["torchdistill.th"] = (a, {
        "model": state_dict(a, "module."), "optimizer": sgd_state(a), "best_value": 92.81,
        "lr_scheduler": {"milestones": collections.Counter({30: 1, 50: 1}), "gamma": 0.1, "base_lrs": [0.1],
                         "last_epoch": 100, "_step_count": 101, "verbose": False},
        "args": argparse.Namespace(config="configs/resnet20.yaml", device="cuda", log=None, start_epoch=0),
    }, "torchdistill: model (module.), optimizer, best_value, lr_scheduler with a Counter, args Namespace")

    a = Archive()
    out["kuangliu.pth"] = (a, {"net": state_dict(a, "module."), "acc": 95.16, "epoch": 199},
                           "kuangliu/pytorch-cifar: {net (module.), acc, epoch}")

    a = Archive()
    out["model-state-dict.pt"] = (a, {"epoch": 5, "model_state_dict": state_dict(a), "optimizer_state_dict": sgd_state(a),
                                      "loss": a.scalar(0.25)},
                                  "PyTorch tutorial: {epoch, model_state_dict, optimizer_state_dict, loss 0-d tensor}")

    a = Archive()
    hf = collections.OrderedDict()
    hf["resnet.embedder.embedder.convolution.weight"] = a.tensor(2, 1, 1, 1)
    hf["resnet.embedder.embedder.normalization.weight"] = a.tensor(2)
    hf["resnet.embedder.embedder.normalization.bias"] = a.tensor(2)
    hf["resnet.embedder.embedder.normalization.running_mean"] = a.tensor(2)
    hf["resnet.embedder.embedder.normalization.running_var"] = a.tensor(2, values=[1.0, 2.0])
    hf["classifier.1.weight"] = a.tensor(3, 2)
    hf["classifier.1.bias"] = a.tensor(3)
    out["hf-pytorch_model.bin"] = (a, hf, "Hugging Face pytorch_model.bin: a plain state dict, no prefix shared by all keys")

    a = Archive()
    out["ema-only.pth"] = (a, {"model_ema": state_dict(a), "epoch": 3}, "only an EMA copy: {model_ema, epoch}")

    a = Archive()
    out["whole-module-dataparallel.pth"] = (a, whole_module(a),
                                            "torch.save(DataParallel(net)): whole module tree with Conv2d, BatchNorm2d, ReLU, "
                                            "MaxPool2d, Identity, AdaptiveAvgPool2d, Flatten, Dropout, Linear")

    a = Archive()
    out["module-in-dict.pth"] = (a, {"model": whole_module(a).__dict__["_modules"]["module"], "epoch": 1},
                                 "{'model': whole nn.Module, 'epoch'}")

    a = Archive()
    out["shared-dag.pth"] = (a, shared_dag(a), "40 nested Sequentials each registering the next twice (2**40 paths, 41 modules)")

    a = Archive()
    shared = state_dict(a)
    out["aliased.pth"] = (a, {"state_dict": shared, "model": shared, "history": [shared, [shared]]},
                          "one state dict object referenced from three places")
    return out


def main():
    os.makedirs(OUT, exist_ok=True)
    lines = ["# Checkpoint layouts", "",
             "Written by `tools/make_checkpoint_layouts.py` with Python's standard `pickle` and stand-in classes named like the",
             "real ones (torch is not imported; see the script). Tiny made-up weights: the tests check which entry the reader",
             "takes and what it reports.", "", "| file | layout |", "|---|---|"]
    for name, (archive, obj, what) in layouts().items():
        archive.write(os.path.join(OUT, name), obj)
        lines.append(f"| `{name}` | {what} |")
    with open(os.path.join(OUT, "README.md"), "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
