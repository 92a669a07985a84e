"""PyTorch state dicts from .rnw files whose structure is a torchvision or a CIFAR ResNet.

Canonical tensor names follow torchvision, so a torchvision layout keeps them as they are; the
CIFAR layout (as in akamaster/pytorch_resnet_cifar10) calls the projection shortcut `shortcut.0/1`
and the classifier `linear`. A name is only worth something if the PyTorch class it belongs to
computes what the spec says, so `names="auto"` first checks the structure op by op (stem, block
op order, where the stride sits, padding, shortcut kind, BN epsilon, head) and refuses, saying
what differs, when neither layout fits. `names="canonical"` gives the canonical names unchanged.

Values are float32 whatever the stored dtype (widened as the Swift reader widens them), and every
BatchNorm gets a `num_batches_tracked` counter (int64, 0), so `load_state_dict(strict=True)` of
the matching torchvision / CIFAR model accepts the result. torch is imported only when it is
installed and asked for (`tensors="auto"` or `"torch"`); otherwise the values are numpy arrays.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from ._spec import all_ops

TORCH_EPSILON = 1e-5


class LayoutMismatch(ValueError):
    """The spec is not the structure of the layout asked for; the text says where."""


def _pad(op: dict) -> tuple:
    p = op["padding"]
    if p["mode"] == "valid":
        return (0, 0, 0, 0)
    if p["mode"] == "explicit":
        return (p["top"], p["bottom"], p["left"], p["right"])
    return ("same",)


def _conv(op, where: str, name: str, kernel: int, stride: int, pad: int, groups=None):
    if op.get("op") != "conv" or op.get("name") != name:
        raise LayoutMismatch(f"{where}: expected conv '{name}', found {op.get('op')} '{op.get('name', '')}'")
    if op["kernel"] != [kernel, kernel] or op["stride"] != [stride, stride] or op["dilation"] != [1, 1]:
        raise LayoutMismatch(f"{where}: conv '{name}' should be {kernel}x{kernel} stride {stride}, is "
                             f"{op['kernel']} stride {op['stride']} dilation {op['dilation']}")
    if _pad(op) != (pad,) * 4:
        raise LayoutMismatch(f"{where}: conv '{name}' should have padding {pad}, has {op['padding']}")
    if op["bias"]:
        raise LayoutMismatch(f"{where}: conv '{name}' has a bias; torchvision and CIFAR ResNets have none")
    if groups is not None and op["groups"] != groups:
        raise LayoutMismatch(f"{where}: conv '{name}' has groups {op['groups']}, expected {groups}")


def _bn(op, where: str, name: str):
    if op.get("op") != "batch_norm" or op.get("name") != name:
        raise LayoutMismatch(f"{where}: expected batch_norm '{name}', found {op.get('op')} '{op.get('name', '')}'")
    if not (op["scale"] and op["center"]) or abs(op["epsilon"] - TORCH_EPSILON) > 1e-12:
        raise LayoutMismatch(f"{where}: batch_norm '{name}' must have weight, bias and epsilon 1e-5 (has {op['epsilon']})")


def _relu(op, where: str):
    if op.get("op") != "relu":
        raise LayoutMismatch(f"{where}: expected relu, found {op.get('op')}")


def _ops(ops: list, where: str, n: int):
    if len(ops) != n:
        raise LayoutMismatch(f"{where}: expected {n} ops, found {len(ops)} ({', '.join(o.get('op', '?') for o in ops)})")


def _head(spec: dict):
    head = [op for op in spec["head"] if op["op"] != "flatten"]
    if [op["op"] for op in head] != ["global_avg_pool", "dense"] or head[1]["name"] != "fc" or not head[1]["bias"]:
        raise LayoutMismatch("head: expected global average pooling and a dense layer 'fc' with bias")


def _blocks(spec: dict, cifar: bool) -> dict:
    """Checks the blocks; returns the rename of shortcut modules (CIFAR option B)."""
    renames = {}
    for s, stage in enumerate(spec["stages"]):
        for b, block in enumerate(stage["blocks"]):
            name = f"layer{s + 1}.{b}"
            where = f"stages[{s}].blocks[{b}]"
            if block["name"] != name:
                raise LayoutMismatch(f"{where}: block is named '{block['name']}', expected '{name}'")
            if block["pre"]:
                raise LayoutMismatch(f"{where}: pre-activation ops; torchvision and CIFAR ResNets have none")
            _ops(block["post"], where + ".post", 1)
            _relu(block["post"][0], where + ".post[0]")
            r = block["residual"]
            first = r[0] if r else {}
            stride = first.get("stride", [1, 1])[0] if len(r) == 5 else (r[3].get("stride", [1, 1])[0] if len(r) == 8 else 1)
            if len(r) == 5:  # basic block: conv1 bn1 relu conv2 bn2, stride on conv1
                _conv(r[0], where + ".residual[0]", f"{name}.conv1", 3, stride, 1, groups=1)
                _bn(r[1], where + ".residual[1]", f"{name}.bn1")
                _relu(r[2], where + ".residual[2]")
                _conv(r[3], where + ".residual[3]", f"{name}.conv2", 3, 1, 1, groups=1)
                _bn(r[4], where + ".residual[4]", f"{name}.bn2")
            elif len(r) == 8 and not cifar:  # bottleneck: stride on the 3x3 (v1.5)
                _conv(r[0], where + ".residual[0]", f"{name}.conv1", 1, 1, 0, groups=1)
                _bn(r[1], where + ".residual[1]", f"{name}.bn1")
                _relu(r[2], where + ".residual[2]")
                _conv(r[3], where + ".residual[3]", f"{name}.conv2", 3, stride, 1)
                _bn(r[4], where + ".residual[4]", f"{name}.bn2")
                _relu(r[5], where + ".residual[5]")
                _conv(r[6], where + ".residual[6]", f"{name}.conv3", 1, 1, 0, groups=1)
                _bn(r[7], where + ".residual[7]", f"{name}.bn3")
            else:
                raise LayoutMismatch(f"{where}: residual branch of {len(r)} ops is neither a basic"
                                     + ("" if cifar else " nor a bottleneck") + " block")
            sc = block["shortcut"]
            kinds = [op["op"] for op in sc]
            if kinds == ["conv", "batch_norm"]:
                _conv(sc[0], where + ".shortcut[0]", f"{name}.downsample.0", 1, stride, 0, groups=1)
                _bn(sc[1], where + ".shortcut[1]", f"{name}.downsample.1")
                if cifar:
                    renames[f"{name}.downsample.0"] = f"{name}.shortcut.0"
                    renames[f"{name}.downsample.1"] = f"{name}.shortcut.1"
            elif kinds == [] and stride == 1:
                pass
            elif cifar and kinds == ["subsample", "channel_pad"] and sc[0]["stride"] == stride == 2 \
                    and sc[1]["before"] == sc[1]["after"]:
                pass  # option A: x[:, :, ::2, ::2] with planes // 4 zero channels on each side
            else:
                raise LayoutMismatch(f"{where}: shortcut ({', '.join(kinds) or 'identity'}, stride {stride}) "
                                     "is not one the PyTorch class has")
    return renames


def torchvision_mismatch(spec: dict) -> str | None:
    """Why `spec` is not a torchvision ResNet (v1.5, plain stem), or None when it is."""
    try:
        stem = spec["stem"]
        _ops(stem, "stem", 4)
        _conv(stem[0], "stem[0]", "conv1", 7, 2, 3, groups=1)
        _bn(stem[1], "stem[1]", "bn1")
        _relu(stem[2], "stem[2]")
        p = stem[3]
        if p["op"] != "max_pool" or p["kernel"] != [3, 3] or p["stride"] != [2, 2] or _pad(p) != (1, 1, 1, 1):
            raise LayoutMismatch("stem[3]: expected max pool 3x3 stride 2 padding 1")
        _blocks(spec, cifar=False)
        _head(spec)
    except LayoutMismatch as e:
        return str(e)
    return None


def cifar_mismatch(spec: dict) -> str | None:
    """Why `spec` is not a CIFAR ResNet with akamaster names, or None when it is."""
    try:
        stem = spec["stem"]
        _ops(stem, "stem", 3)
        _conv(stem[0], "stem[0]", "conv1", 3, 1, 1, groups=1)
        _bn(stem[1], "stem[1]", "bn1")
        _relu(stem[2], "stem[2]")
        _blocks(spec, cifar=True)
        _head(spec)
    except LayoutMismatch as e:
        return str(e)
    return None


def torch_names(spec: dict, names: str = "auto") -> tuple[str, dict]:
    """(layout, {canonical module: PyTorch module}) for `names` = auto, torchvision, cifar, canonical."""
    if names == "canonical":
        return "canonical", {}
    wanted = ["torchvision", "cifar"] if names == "auto" else [names]
    reasons = []
    for layout in wanted:
        if layout == "torchvision":
            why = torchvision_mismatch(spec)
            if why is None:
                return layout, {}
        elif layout == "cifar":
            why = cifar_mismatch(spec)
            if why is None:
                renames = _blocks(spec, cifar=True)
                renames["fc"] = "linear"
                return layout, renames
        else:
            raise ValueError(f"names must be 'auto', 'torchvision', 'cifar' or 'canonical', not {names!r}")
        reasons.append(f"not {layout}: {why}")
    raise LayoutMismatch(f"spec family {spec.get('family')!r} has no PyTorch layout this package knows ("
                         + "; ".join(reasons) + "); use names='canonical' for the canonical names")


def to_torch_state_dict(f, names: str = "auto", tensors: str = "auto") -> OrderedDict:
    """The weights of the open RNWFile `f` as an OrderedDict of PyTorch state-dict entries.

    names: 'auto' (torchvision, else CIFAR, else LayoutMismatch), 'torchvision', 'cifar' or
    'canonical'. tensors: 'auto' (torch tensors when torch is importable, else numpy), 'torch' or
    'numpy'. Values are float32; each BatchNorm also gets `num_batches_tracked` (int64 0).
    """
    layout, renames = torch_names(f.spec, names)
    torch = None
    if tensors in ("auto", "torch"):
        try:
            import torch  # noqa: F811 - optional, only when asked for
        except ImportError:
            if tensors == "torch":
                raise
    elif tensors != "numpy":
        raise ValueError(f"tensors must be 'auto', 'torch' or 'numpy', not {tensors!r}")
    out = OrderedDict()

    def put(key, value):
        out[key] = torch.from_numpy(value) if torch is not None else value

    by_module = {}                     # grouped once: linear in ops + tensors
    for n in f.names():
        by_module.setdefault(n.rsplit(".", 1)[0], []).append(n)
    for op in all_ops(f.spec):
        if op["op"] not in ("conv", "batch_norm", "dense"):
            continue
        module = renames.get(op["name"], op["name"])
        owned = by_module.get(op["name"], [])
        for n in owned:
            put(module + "." + n.rsplit(".", 1)[1], f.float32(n))
        if op["op"] == "batch_norm":
            put(module + ".num_batches_tracked", np.zeros((), dtype=np.int64))
    return out


