#!/usr/bin/env python3
"""Writes crafted inputs that cost a careless reader more than linear work, and .rnw files whose
spec breaks the rules the forward pass relies on.

    python3 tools/make_slow_inputs.py                 # the small files: fixtures/slow/ + MANIFEST.json
    python3 tools/make_slow_inputs.py --large DIR     # also the large inputs, into DIR (not committed)

Standard library only (the .keras input borrows fixtures/bad/good.h5 as its model.weights.h5). Never
load the pickles here with `pickle` or `torch.load`: they name module classes that do not exist.

Small files (committed, fixtures/slow/):
  shared-dag-60.pth           a whole pickled module whose every level registers the next level twice:
                              2**60 paths through 61 distinct modules (a walk without a visited set
                              never finishes)
  shared-dag-candidates.pth   {'a': that module, 'b': the same module}: two candidates sharing a subtree
  list-dag.pth             a list whose every level holds the next level twice, a state dict at the
                              bottom: the weight search must visit each object once
  spec-*.rnw                  a valid tiny model and copies whose spec breaks one rule the forward pass
                              relies on (a flatten or softmax in the stem, a zero pool stride, a conv
                              whose input channels do not match, a negative epsilon, a residual branch
                              whose channels differ from the shortcut's)

Large files (--large; the tests build the same inputs in Swift at test time, see
Tests/CLITests/LinearWorkTests.swift, since Python is not a test dependency):
  keras-reverse-20000.keras   a Functional config of 20,000 chained activations listed last layer first
  classes-200000.pth          a pickle instantiating 200,000 distinct module classes
  safetensors-999999.safetensors  999,999 zero-size tensor entries
  stages-20000.safetensors    20,000 stages of one block each (torchvision names)
  containers-20000.safetensors  one block with 20,000 containers
  long-prefix.pth             a state dict whose two keys share a prefix of 200,000 components
  deep-numbered.safetensors   two conv keys 50,000 numbered components deep (block detection per prefix)
"""
import argparse
import collections
import hashlib
import io
import json
import os
import struct
import sys
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "fixtures", "slow")
sys.path.insert(0, os.path.join(ROOT, "tools"))

import make_checkpoint_layouts as layouts  # noqa: E402  (stand-ins named like torch's classes)


# ---------------------------------------------------------------- pickles

def shared_dag_candidates(a):
    dag = layouts.shared_dag(a, depth=60)
    return {"a": dag, "b": dag}


def list_dag(a, depth=10):
    """Each level is a list holding the level below twice; the bottom holds a state dict."""
    node = [layouts.state_dict(a)]
    for _ in range(depth):
        node = [node, node]
    return {"levels": node}


def many_classes_pickle(n):
    """Protocol 2: a list of `n` instances (NEWOBJ, no arguments) of `n` distinct user classes."""
    out = bytearray(b"\x80\x02]q\x00(")          # PROTO 2, EMPTY_LIST, BINPUT 0, MARK
    for i in range(n):
        out += b"c__main__\nM%07d\n)\x81" % i     # GLOBAL, EMPTY_TUPLE, NEWOBJ
    out += b"e."                                  # APPENDS, STOP
    return bytes(out)


def torch_zip(pkl):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        for name, data in (("archive/data.pkl", pkl), ("archive/byteorder", b"little"), ("archive/version", b"3\n")):
            z.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), data)
    return buf.getvalue()


# ---------------------------------------------------------------- keras

def keras_reverse_chain(n):
    """A Functional model: input, then `n` activations each fed by the one before, listed in reverse."""
    layers = [{"class_name": "InputLayer", "name": "in", "config": {"name": "in", "batch_input_shape": [None, 8, 8, 3]},
               "inbound_nodes": []}]
    prev = "in"
    for i in range(n):
        name = "a%d" % i
        layers.append({"class_name": "Activation", "name": name, "config": {"name": name, "activation": "relu"},
                       "inbound_nodes": [[[prev, 0, 0, {}]]]})
        prev = name
    layers.reverse()
    config = {"class_name": "Functional", "config": {"name": "chain", "layers": layers,
                                                     "input_layers": [["in", 0, 0]], "output_layers": [[prev, 0, 0]]}}
    text = json.dumps(config, separators=(",", ":")).encode()
    # Any valid HDF5 image will do as the weights: the layer graph is built before they are matched.
    with open(os.path.join(ROOT, "fixtures", "bad", "good.h5"), "rb") as f:
        weights = f.read()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        for name, data in (("metadata.json", b'{"keras_version": "3.15.1"}'), ("config.json", text),
                           ("model.weights.h5", weights)):
            z.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), data)
    return buf.getvalue()


# ---------------------------------------------------------------- safetensors

def tiny_safetensors(names):
    """float32 tensors in the given order: fc.weight (2, 1), fc.bias (2), every other one (1, 1, 1, 1)."""
    fields, offset = [], 0
    for name in names:
        shape, size = ([2, 1], 8) if name == "fc.weight" else ([2], 8) if name == "fc.bias" else ([1, 1, 1, 1], 4)
        fields.append('"%s":{"dtype":"F32","shape":%s,"data_offsets":[%d,%d]}' % (name, json.dumps(shape).replace(" ", ""), offset, offset + size))
        offset += size
    header = ("{" + ",".join(fields) + "}").encode()
    header += b" " * (-len(header) % 8)
    return struct.pack("<Q", len(header)) + header + b"\x3f" * offset


def many_stages(n):
    return tiny_safetensors(["conv1.weight"] + [k for s in range(1, n + 1) for k in ("layer%d.0.conv1.weight" % s, "layer%d.0.conv2.weight" % s)]
                            + ["fc.weight", "fc.bias"])


def many_containers(n):
    return tiny_safetensors(["conv1.weight"] + ["layer1.0.c%d.conv.weight" % c for c in range(n)] + ["fc.weight", "fc.bias"])


def zero_size_safetensors(n):
    entries = ",".join('"t%07d":{"dtype":"F32","shape":[0],"data_offsets":[0,0]}' % i for i in range(n))
    header = ("{" + entries + "}").encode()
    header += b" " * (-len(header) % 8)
    return struct.pack("<Q", len(header)) + header


# ---------------------------------------------------------------- .rnw

def xxh64(data, seed=0):
    p1, p2, p3, p4, p5 = (0x9E3779B185EBCA87, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9,
                          0x85EBCA77C2B2AE63, 0x27D4EB2F165667C5)
    m = (1 << 64) - 1

    def rotl(x, r):
        return ((x << r) | (x >> (64 - r))) & m

    def rnd(acc, lane):
        return (rotl((acc + lane * p2) & m, 31) * p1) & m

    n, i = len(data), 0
    if n >= 32:
        v = [(seed + p1 + p2) & m, (seed + p2) & m, seed & m, (seed - p1) & m]
        while i + 32 <= n:
            for k in range(4):
                v[k] = rnd(v[k], struct.unpack_from("<Q", data, i + 8 * k)[0])
            i += 32
        h = (rotl(v[0], 1) + rotl(v[1], 7) + rotl(v[2], 12) + rotl(v[3], 18)) & m
        for k in range(4):
            h = ((h ^ rnd(0, v[k])) * p1 + p4) & m
    else:
        h = (seed + p5) & m
    h = (h + n) & m
    while i + 8 <= n:
        h = ((rotl(h ^ rnd(0, struct.unpack_from("<Q", data, i)[0]), 27) * p1) + p4) & m
        i += 8
    if i + 4 <= n:
        h = ((rotl(h ^ (struct.unpack_from("<I", data, i)[0] * p1 & m), 23) * p2) + p3) & m
        i += 4
    while i < n:
        h = (rotl(h ^ (data[i] * p5 & m), 11) * p1) & m
        i += 1
    h = ((h ^ (h >> 33)) * p2) & m
    h = ((h ^ (h >> 29)) * p3) & m
    return h ^ (h >> 32)


def varint(v):
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        out.append(b | (0x80 if v else 0))
        if not v:
            return bytes(out)


def field(number, wire, payload):
    key = varint(number << 3 | wire)
    if wire == 2:
        return key + varint(len(payload)) + payload
    return key + payload


def conv(name, cin, cout, k=3, stride=1):
    return {"op": "conv", "name": name, "inChannels": cin, "outChannels": cout, "kernel": [k, k], "stride": [stride, stride],
            "dilation": [1, 1], "padding": {"mode": "same"}, "groups": 1, "bias": False}


def bn(name, c, eps=1e-5):
    return {"op": "batch_norm", "name": name, "channels": c, "epsilon": eps, "scale": True, "center": True}


def tiny_spec():
    return {
        "family": "crafted", "inputChannels": 3, "classes": 2, "inputSize": [8, 8],
        "stem": [conv("conv1", 3, 4), bn("bn1", 4), {"op": "relu"},
                 {"op": "max_pool", "kernel": [2, 2], "stride": [2, 2], "padding": {"mode": "valid"}, "countIncludePad": True}],
        "stages": [{"blocks": [{"name": "layer1.0", "pre": [], "shortcut": [], "post": [{"op": "relu"}],
                                "residual": [conv("layer1.0.conv1", 4, 4), bn("layer1.0.bn1", 4)]}]}],
        "head": [{"op": "global_avg_pool"}, {"op": "flatten", "order": "chw"},
                 {"op": "dense", "name": "fc", "inFeatures": 4, "outFeatures": 2, "bias": True}],
    }


def parameters(spec):
    ops = list(spec["stem"])
    for stage in spec["stages"]:
        for b in stage["blocks"]:
            ops += b["pre"] + b["residual"] + b["shortcut"] + b["post"]
    ops += spec["head"]
    out = []
    for op in ops:
        if op["op"] == "conv":
            out.append((op["name"] + ".weight", [op["outChannels"], op["inChannels"] // op["groups"]] + op["kernel"]))
            if op["bias"]:
                out.append((op["name"] + ".bias", [op["outChannels"]]))
        elif op["op"] == "batch_norm":
            for suffix in ("weight", "bias", "running_mean", "running_var"):
                out.append((op["name"] + "." + suffix, [op["channels"]]))
        elif op["op"] == "dense":
            out.append((op["name"] + ".weight", [op["outFeatures"], op["inFeatures"]]))
            if op["bias"]:
                out.append((op["name"] + ".bias", [op["outFeatures"]]))
    return out


def rnw_bytes(spec):
    """A version 1.0 .rnw: every tensor F32, values small and deterministic (variances positive)."""
    params = parameters(spec)
    blobs = []
    for i, (name, shape) in enumerate(params):
        n = 1
        for d in shape:
            n *= d
        base = 1.0 if name.endswith("running_var") else 0.0
        blobs.append(struct.pack("<%df" % n, *[base + ((i * 7 + j * 3) % 11 - 5) / 16.0 for j in range(n)]))
    spec_json = json.dumps(spec, sort_keys=True, separators=(",", ":")).encode()

    def manifest(offsets):
        m = field(1, 0, varint(1)) + field(2, 0, varint(0)) + field(3, 2, spec_json)
        for (name, shape), blob, off in zip(params, blobs, offsets):
            e = field(1, 2, name.encode()) + field(2, 0, varint(1))
            e += field(3, 2, b"".join(varint(d) for d in shape))
            e += field(4, 0, varint(off)) + field(5, 0, varint(len(blob))) + field(6, 0, varint(xxh64(blob)))
            m += field(4, 2, e)
        return m

    # Offsets depend on the manifest's length, which depends on the offsets' varints: iterate.
    offsets = [0] * len(params)
    for _ in range(4):
        body = manifest(offsets)
        cursor, new = 40 + len(body), []
        for blob in blobs:
            cursor = (cursor + 63) // 64 * 64
            new.append(cursor)
            cursor += len(blob)
        if new == offsets:
            break
        offsets = new
    body = manifest(offsets)
    head = b"RNW\x00\r\n\x1a\n" + struct.pack("<HHIQQ", 1, 0, 0, len(body), xxh64(body))
    out = bytearray(head + struct.pack("<Q", xxh64(head)) + body)
    for blob, off in zip(blobs, offsets):
        out += b"\x00" * (off - len(out)) + blob
    return bytes(out)


def invalid_specs():
    """(file, spec, the field a refusal must name)."""
    out = []
    s = tiny_spec(); s["stem"].append({"op": "flatten", "order": "chw"})
    out.append(("spec-flatten-in-stem.rnw", s, "stages[0].blocks[0].residual[0]"))
    s = tiny_spec(); s["stem"].insert(3, {"op": "softmax"})
    out.append(("spec-softmax-in-stem.rnw", s, "stem[3]"))
    s = tiny_spec(); s["stem"][3]["stride"] = [0, 2]
    out.append(("spec-zero-pool-stride.rnw", s, "stem[3].stride"))
    s = tiny_spec(); s["stages"][0]["blocks"][0]["residual"][0]["inChannels"] = 8
    s["stages"][0]["blocks"][0]["residual"][0]["groups"] = 1
    out.append(("spec-conv-channels.rnw", s, "stages[0].blocks[0].residual[0].inChannels"))
    s = tiny_spec(); s["stem"][1]["epsilon"] = -1.0
    out.append(("spec-negative-epsilon.rnw", s, "stem[1].epsilon"))
    s = tiny_spec(); b = s["stages"][0]["blocks"][0]
    b["residual"] = [conv("layer1.0.conv1", 4, 8), bn("layer1.0.bn1", 8)]
    s["head"][2]["inFeatures"] = 8
    out.append(("spec-branch-channels.rnw", s, "stages[0].blocks[0]"))
    return out


# ---------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--large", metavar="DIR", help="also write the large inputs into DIR")
    args = ap.parse_args()
    os.makedirs(OUT, exist_ok=True)
    files = {}

    def put(name, data, what, expected):
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(data)
        files[name] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(), "what": what, "expected": expected}

    for name, build, what, expected in [
        ("shared-dag-60.pth", lambda a: layouts.shared_dag(a, depth=60),
         "whole pickled module, each level registering the next twice: 2**60 paths, 61 modules",
         "reads in linear time; the module tree lists each object once (the repeats as shared)"),
        ("shared-dag-candidates.pth", shared_dag_candidates,
         "{'a': the 60-level shared module, 'b': the same object}",
         "reads in linear time (the second candidate is the same object)"),
        ("list-dag.pth", list_dag,
         "nested lists, each level holding the level below twice (2**10 paths, within the search depth), a state dict at the bottom",
         "the weight search visits each object once and finds the state dict"),
    ]:
        a = layouts.Archive()
        path = os.path.join(OUT, name)
        a.write(path, build(a))
        with open(path, "rb") as f:
            data = f.read()
        put(name, data, what, expected)

    put("spec-valid.rnw", rnw_bytes(tiny_spec()), "a tiny valid model (control)", "reads and converts, exit 0")
    for name, spec, place in invalid_specs():
        put(name, rnw_bytes(spec), "spec breaks a forward-pass rule at " + place,
            "exit 3 naming the file, manifest spec_json and " + place)

    with open(os.path.join(OUT, "MANIFEST.json"), "w") as f:
        json.dump({"generator": "tools/make_slow_inputs.py", "files": files}, f, indent=1, sort_keys=True)
        f.write("\n")

    if args.large:
        os.makedirs(args.large, exist_ok=True)
        a = layouts.Archive()
        prefix = "a." * 200000
        a.write(os.path.join(args.large, "long-prefix.pth"),
                collections.OrderedDict([(prefix + "conv1.weight", a.tensor(2, 1, 1, 1)), (prefix + "fc.weight", a.tensor(3, 2))]))
        for name, data in [("keras-reverse-20000.keras", keras_reverse_chain(20000)),
                           ("classes-200000.pth", torch_zip(many_classes_pickle(200000))),
                           ("safetensors-999999.safetensors", zero_size_safetensors(999999)),
                           ("stages-20000.safetensors", many_stages(20000)),
                           ("containers-20000.safetensors", many_containers(20000)),
                           ("deep-numbered.safetensors", tiny_safetensors(
                               ["conv1.weight"] + ["x." + "0." * 50000 + k for k in ("conv1.weight", "conv2.weight")] + ["fc.weight", "fc.bias"]))]:
            with open(os.path.join(args.large, name), "wb") as f:
                f.write(data)
            print(name, len(data))


if __name__ == "__main__":
    main()
