"""The ResNetSpec stored in a manifest's `spec_json`: shape checks and the tensors it owns.

A spec is data (see the format description, "Spec JSON"). This module checks that the decoded
JSON has the fields each op needs, with the right types, that it obeys the structural rules the
Swift reader applies to every file it opens (numbers in range, activation rank and channel counts
carried from op to op, the two branches of a block adding up), and lists the tensors the ops own
with their shapes, in the spec's parameter order. Nothing in it is ever evaluated.
"""

from __future__ import annotations

import math

MAX_WINDOW = 65_536
MAX_CHANNELS = 1 << 24


class SpecError(Exception):
    """The spec is malformed; the text names the JSON path."""


def _int(d: dict, key: str, path: str) -> int:
    v = d.get(key) if isinstance(d, dict) else None
    if isinstance(v, float) and v.is_integer() and abs(v) < 2 ** 63:
        v = int(v)
    if not isinstance(v, int) or isinstance(v, bool):
        raise SpecError(f"{path}.{key}: expected an integer, found {v!r}"[:300])
    return v


def _bool(d: dict, key: str, path: str) -> bool:
    v = d.get(key)
    if not isinstance(v, bool):
        raise SpecError(f"{path}.{key}: expected true or false, found {v!r}"[:300])
    return v


def _str(d: dict, key: str, path: str) -> str:
    v = d.get(key)
    if not isinstance(v, str):
        raise SpecError(f"{path}.{key}: expected a string, found {v!r}"[:300])
    return v


def _list(d: dict, key: str, path: str) -> list:
    v = d.get(key)
    if not isinstance(v, list):
        raise SpecError(f"{path}.{key}: expected a list, found {type(v).__name__}")
    return v


def _pair(d: dict, key: str, path: str) -> list[int]:
    v = _list(d, key, path)
    if len(v) != 2:
        raise SpecError(f"{path}.{key}: must have 2 values (height, width), has {len(v)}")
    out = [_int({"v": x}, "v", f"{path}.{key}") for x in v]
    for x in out:
        if not 1 <= x <= MAX_WINDOW:
            raise SpecError(f"{path}.{key}: {key} {out} must be in 1...{MAX_WINDOW}")
    return out


def _range(v: int, lo: int, hi: int, where: str) -> None:
    if not lo <= v <= hi:
        raise SpecError(f"{where} is {v}, must be in {lo}...{hi}")


def _padding(d: dict, path: str, kernel: list[int] | None) -> None:
    p = d.get("padding")
    if not isinstance(p, dict):
        raise SpecError(f"{path}.padding: expected an object with 'mode'")
    mode = _str(p, "mode", path + ".padding")
    if mode in ("valid", "same"):
        return
    if mode != "explicit":
        raise SpecError(f"{path}.padding.mode: '{mode[:40]}' is not valid, same or explicit")
    sides = [_int(p, s, path + ".padding") for s in ("top", "bottom", "left", "right")]
    for v in sides:
        _range(v, 0, MAX_WINDOW, f"{path}.padding")
    if kernel is not None:
        t, b, left, r = sides
        if not (t < kernel[0] and b < kernel[0] and left < kernel[1] and r < kernel[1]):
            raise SpecError(f"{path}.padding: padding {tuple(sides)} must be smaller than the kernel {kernel} on every side")


class _Walker:
    """Walks the ops in execution order, tracking the activation, and collects the parameters."""

    def __init__(self):
        self.parameters: list[tuple[str, tuple[int, ...]]] = []

    def ops(self, ops, x, path: str):
        if not isinstance(ops, list):
            raise SpecError(f"{path}: expected a list of ops")
        for i, op in enumerate(ops):
            x = self.op(op, x, f"{path}[{i}]")
        return x

    def op(self, op, x, path: str):
        # x is ("spatial", channels) or ("flat", features or None, since)
        if not isinstance(op, dict) or not isinstance(op.get("op"), str):
            raise SpecError(f"{path}: an op must be an object with an 'op' string")
        kind = op["op"]

        def spatial(what: str) -> int:
            if x[0] != "spatial":
                raise SpecError(f"{path} ({kind}): {what} needs an (N, C, H, W) activation, but it is flat after {x[2]}")
            return x[1]

        if kind == "conv":
            name = _str(op, "name", path)
            cin, cout, groups = (_int(op, k, path) for k in ("inChannels", "outChannels", "groups"))
            kernel = _pair(op, "kernel", path)
            _pair(op, "stride", path)
            _pair(op, "dilation", path)
            bias = _bool(op, "bias", path)
            channels = spatial("convolution")
            for key, v in (("inChannels", cin), ("outChannels", cout), ("groups", groups)):
                _range(v, 1, MAX_CHANNELS, f"{path}.{key}")
            if channels != cin:
                raise SpecError(f"{path}.inChannels: convolution expects {cin} input channels, activation has {channels}")
            if cin % groups or cout % groups:
                raise SpecError(f"{path}.groups: groups {groups} must divide both inChannels {cin} and outChannels {cout}")
            _padding(op, path, None)
            self.parameters.append((f"{name}.weight", (cout, cin // groups, kernel[0], kernel[1])))
            if bias:
                self.parameters.append((f"{name}.bias", (cout,)))
            return ("spatial", cout)
        if kind == "batch_norm":
            name = _str(op, "name", path)
            channels = _int(op, "channels", path)
            eps = op.get("epsilon")
            # float() of a huge JSON integer overflows: such an epsilon is refused like any other bad one.
            try:
                finite = isinstance(eps, (int, float)) and not isinstance(eps, bool) and math.isfinite(float(eps))
            except OverflowError:
                finite = False
            if not finite or eps < 0:
                raise SpecError(f"{path}.epsilon: {eps!r} is not a finite non-negative number"[:300])
            scale, center = _bool(op, "scale", path), _bool(op, "center", path)
            _range(channels, 1, MAX_CHANNELS, f"{path}.channels")
            have = x[1]
            if have is not None and have != channels:
                raise SpecError(f"{path}.channels: batch norm has {channels} channels, activation has {have}")
            if scale:
                self.parameters.append((f"{name}.weight", (channels,)))
            if center:
                self.parameters.append((f"{name}.bias", (channels,)))
            self.parameters.append((f"{name}.running_mean", (channels,)))
            self.parameters.append((f"{name}.running_var", (channels,)))
            return x
        if kind == "relu":
            return x
        if kind in ("max_pool", "avg_pool"):
            kernel = _pair(op, "kernel", path)
            _pair(op, "stride", path)
            _bool(op, "countIncludePad", path)
            channels = spatial("pooling")
            _padding(op, path, kernel)
            return ("spatial", channels)
        if kind == "zero_pad":
            for side in ("top", "bottom", "left", "right"):
                _range(_int(op, side, path), 0, MAX_WINDOW, f"{path}.{side}")
            return ("spatial", spatial("zero padding"))
        if kind == "subsample":
            _range(_int(op, "stride", path), 1, MAX_WINDOW, f"{path}.stride")
            return ("spatial", spatial("subsample"))
        if kind == "channel_pad":
            before, after = _int(op, "before", path), _int(op, "after", path)
            _range(before, 0, MAX_CHANNELS, f"{path}.before")
            _range(after, 0, MAX_CHANNELS, f"{path}.after")
            return ("spatial", spatial("channel padding") + before + after)
        if kind == "global_avg_pool":
            return ("flat", spatial("global average pool"), f"{path} (global_avg_pool)")
        if kind == "flatten":
            if op.get("order") not in ("chw", "hwc"):
                raise SpecError(f"{path}.order: must be 'chw' or 'hwc'")
            if x[0] == "flat":
                return x
            spatial("flatten")
            return ("flat", None, f"{path} (flatten)")
        if kind == "dense":
            name = _str(op, "name", path)
            fin, fout = _int(op, "inFeatures", path), _int(op, "outFeatures", path)
            bias = _bool(op, "bias", path)
            if x[0] != "flat":
                raise SpecError(f"{path} (dense): needs a flat (N, features) activation, but it is (N, C, H, W)")
            _range(fin, 1, MAX_CHANNELS, f"{path}.inFeatures")
            _range(fout, 1, MAX_CHANNELS, f"{path}.outFeatures")
            if x[1] is not None and x[1] != fin:
                raise SpecError(f"{path}.inFeatures: dense expects {fin} input features, activation has {x[1]}")
            self.parameters.append((f"{name}.weight", (fout, fin)))
            if bias:
                self.parameters.append((f"{name}.bias", (fout,)))
            return ("flat", fout, x[2])
        if kind == "softmax":
            if x[0] != "flat":
                raise SpecError(f"{path} (softmax): needs a flat (N, classes) activation")
            return x
        raise SpecError(f"{path}.op: unknown op '{kind[:40]}'")

    def block(self, block, x, path: str):
        if not isinstance(block, dict):
            raise SpecError(f"{path}: a block must be an object")
        name = _str(block, "name", path)
        forked = self.ops(_list(block, "pre", path), x, path + ".pre")
        residual = self.ops(_list(block, "residual", path), forked, path + ".residual")
        shortcut = self.ops(_list(block, "shortcut", path), forked, path + ".shortcut")
        if residual[0] != shortcut[0]:
            raise SpecError(f"{path} (block '{name}'): one branch is (N, C, H, W) and the other flat; they cannot be added")
        if residual[1] is not None and shortcut[1] is not None and residual[1] != shortcut[1]:
            raise SpecError(f"{path} (block '{name}'): residual branch gives {residual[1]} channels, the shortcut {shortcut[1]}")
        return self.ops(_list(block, "post", path), residual, path + ".post")


def spec_parameters(spec) -> list[tuple[str, tuple[int, ...]]]:
    """Checks `spec` (decoded JSON) and returns its (tensor name, shape) pairs in parameter order."""
    if not isinstance(spec, dict):
        raise SpecError("the spec is not a JSON object")
    _str(spec, "family", "spec")
    _int(spec, "classes", "spec")
    channels = _int(spec, "inputChannels", "spec")
    _range(channels, 1, MAX_CHANNELS, "inputChannels")
    w = _Walker()
    x = w.ops(_list(spec, "stem", "spec"), ("spatial", channels), "stem")
    for s, stage in enumerate(_list(spec, "stages", "spec")):
        if not isinstance(stage, dict):
            raise SpecError(f"stages[{s}]: a stage must be an object with 'blocks'")
        for b, block in enumerate(_list(stage, "blocks", f"stages[{s}]")):
            x = w.block(block, x, f"stages[{s}].blocks[{b}]")
    w.ops(_list(spec, "head", "spec"), x, "head")
    names = set()
    for n, _ in w.parameters:
        if n in names:
            raise SpecError(f"two ops own a tensor named {n}")
        names.add(n)
    return w.parameters


def all_ops(spec: dict) -> list[dict]:
    """Every op in execution order (blocks: pre, residual, shortcut, post); the spec was checked."""
    ops = list(spec["stem"])
    for stage in spec["stages"]:
        for b in stage["blocks"]:
            ops += b["pre"] + b["residual"] + b["shortcut"] + b["post"]
    return ops + list(spec["head"])
