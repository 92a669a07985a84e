#!/usr/bin/env python3
"""Loads every file `resnet-convert export` writes in the real framework and compares its output
with the source framework's goldens (io.npz: input, output, optional layout).

    check_exports.py --bin .build/release/resnet-convert --out /tmp/exports \
        --case NAME SOURCE GOLDEN [--case ...] \
        [--tolerance NAME TOL] [--expect-dtype NAME DTYPE] \
        [--torch-python PY] [--keras-python PY] [--json results.json]

For each case the source is exported to NAME.pth, NAME.safetensors, NAME.h5 and NAME.onnx, then:
  * .pth / .safetensors: torch.load(weights_only=True) / safetensors.torch.load_file, then
    load_state_dict(strict=True) into torchvision's ResNet (torchvision names), the seed's PyTorch
    model (seed names), or, for structures no PyTorch class has, a module built from the spec whose
    submodules carry the canonical names;
  * .h5: keras.applications ResNet50/101/152(V2) (or the seed Keras model) built with
    weights=None, then model.load_weights(file), in tf_keras and in Keras 3; for every other
    structure the export is a full model with its own model_config, loaded with
    models.load_model(file, compile=False) in tf_keras and in Keras 3 (NHWC input);
  * .onnx: onnxruntime.
Exports the tool refuses (exit 3, e.g. a max pool with -inf padding on a possibly negative input
in .h5) are recorded as refused.
For .pth, .safetensors and .onnx the worker also records the stored dtypes of the weights (rank
2 and up) and the provenance metadata the framework reads back (safetensors `__metadata__`, the
state dict's `_metadata["resnet_convert"]`, ONNX `metadata_props`); every such export must carry
`tool_version` and `source_sha256`, and with --expect-dtype NAME f16|bf16|f32 the weights of case
NAME must all be of that dtype.
Frameworks run in separate worker processes (never torch and tensorflow in one process).
Versions are pinned in tools/requirements-check-exports.txt. The tolerance is the float32 policy:
max |error| at most 1e-4 of the golden output's largest magnitude; --tolerance NAME TOL sets
another for one case (for a narrowed .rnw: the tolerance its own parity record states, since the
goldens come from the float32 source).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
TOLERANCE = 1e-4
FORMATS = ["pth", "safetensors", "h5", "onnx"]


# ----------------------------------------------------------------------------- shared helpers

def golden(path):
    import numpy as np
    z = np.load(path)
    x, y = z["input"].astype(np.float32), z["output"].astype(np.float32)
    layout = str(z["layout"]) if "layout" in z.files else ("NHWC" if x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3) else "NCHW")
    nchw = x if layout.upper() == "NCHW" else x.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(nchw), y


def compare(out, ref, tolerance=TOLERANCE):
    import numpy as np
    out = np.asarray(out, dtype=np.float32).reshape(ref.shape)
    err = float(np.abs(out - ref).max())
    scale = float(np.abs(ref).max()) or 1.0
    return {"max_abs_error": err, "relative_error": err / scale, "tolerance": tolerance,
            "top1_agree": bool((out.argmax(1) == ref.argmax(1)).all()), "passed": err / scale <= tolerance}


DTYPE_NAMES = {"float32": "f32", "float16": "f16", "bfloat16": "bf16"}
ONNX_DTYPES = {1: "f32", 10: "f16", 16: "bf16", 7: "i64"}


def stored(dtypes, metadata):
    """What the file says besides its numbers: weight dtypes (rank >= 2) and provenance keys."""
    return {"weight_dtypes": sorted(set(dtypes)), "metadata": metadata}


# ----------------------------------------------------------------------------- torch worker

def spec_module(spec):
    """A torch module that computes the canonical spec; submodule paths are the canonical names."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    root = nn.Module()

    def register(path, module):
        parent = root
        parts = path.split(".")
        for p in parts[:-1]:
            if not hasattr(parent, p):
                parent.add_module(p, nn.Module())
            parent = getattr(parent, p)
        parent.add_module(parts[-1], module)
        return module

    def get(path):
        m = root
        for p in path.split("."):
            m = getattr(m, p)
        return m

    def all_ops():
        ops = list(spec["stem"])
        for st in spec["stages"]:
            for b in st["blocks"]:
                ops += b["pre"] + b["residual"] + b["shortcut"] + b["post"]
        return ops + list(spec["head"])

    for op in all_ops():
        if op["op"] == "conv":
            register(op["name"], nn.Conv2d(op["in_channels"], op["out_channels"], tuple(op["kernel"]), tuple(op["stride"]),
                                           0, tuple(op["dilation"]), op["groups"], op["bias"]))
        elif op["op"] == "batch_norm":
            register(op["name"], nn.BatchNorm2d(op["channels"], eps=op["epsilon"], affine=op["scale"] and op["center"]))
        elif op["op"] == "dense":
            register(op["name"], nn.Linear(op["in_features"], op["out_features"], op["bias"]))

    def pads(p, size, kernel, stride, dilation=(1, 1)):
        if p["mode"] == "valid":
            return (0, 0, 0, 0)
        if p["mode"] == "explicit":
            return (p["left"], p["right"], p["top"], p["bottom"])
        out = []
        for ax in (0, 1):
            o = -(-size[ax] // stride[ax])
            total = max((o - 1) * stride[ax] + (kernel[ax] - 1) * dilation[ax] + 1 - size[ax], 0)
            out.append((total // 2, total - total // 2))
        return (out[1][0], out[1][1], out[0][0], out[0][1])

    def run(ops, x):
        for op in ops:
            k = op["op"]
            if k == "conv":
                m = get(op["name"])
                x = F.pad(x, pads(op["padding"], x.shape[2:], op["kernel"], op["stride"], op["dilation"]))
                x = m(x)
            elif k == "batch_norm":
                m = get(op["name"])
                x = F.batch_norm(x, m.running_mean, m.running_var, m.weight, m.bias, False, 0.0, op["epsilon"])
            elif k == "relu":
                x = F.relu(x)
            elif k == "max_pool":
                x = F.pad(x, pads(op["padding"], x.shape[2:], op["kernel"], op["stride"]), value=float("-inf"))
                x = F.max_pool2d(x, op["kernel"], op["stride"])
            elif k == "avg_pool":
                p = pads(op["padding"], x.shape[2:], op["kernel"], op["stride"])
                if op["count_include_pad"] or p == (0, 0, 0, 0):
                    x = F.avg_pool2d(F.pad(x, p), op["kernel"], op["stride"])
                else:
                    ones = F.pad(torch.ones_like(x[:1, :1]), p)
                    x = F.avg_pool2d(F.pad(x, p), op["kernel"], op["stride"]) / F.avg_pool2d(ones, op["kernel"], op["stride"])
            elif k == "zero_pad":
                x = F.pad(x, (op["left"], op["right"], op["top"], op["bottom"]))
            elif k == "subsample":
                x = x[:, :, ::op["stride"], ::op["stride"]]
            elif k == "channel_pad":
                x = F.pad(x, (0, 0, 0, 0, op["before"], op["after"]))
            elif k == "global_avg_pool":
                x = x.mean(dim=(2, 3))
            elif k == "flatten":
                x = (x.permute(0, 2, 3, 1) if op["order"] == "hwc" else x).reshape(x.shape[0], -1)
            elif k == "dense":
                x = get(op["name"])(x)
            elif k == "softmax":
                x = F.softmax(x, dim=1)
            else:
                raise ValueError("op %s" % k)
        return x

    class SpecNet(nn.Module):
        def __init__(self):
            super().__init__()
            for name, child in list(root.named_children()):
                self.add_module(name, child)

        def forward(self, x):
            x = run(spec["stem"], x)
            for st in spec["stages"]:
                for b in st["blocks"]:
                    y = run(b["pre"], x)
                    x = run(b["post"], run(b["residual"], y) + run(b["shortcut"], y))
            return run(spec["head"], x)

    return SpecNet()


def torch_model_for(spec, sd):
    """The PyTorch class for a state dict: torchvision, the seed model, or a spec-built module."""
    sys.path.insert(0, str(HERE))
    import make_torch_fixtures as mtf   # torchvision import with its C-extension workaround
    blocks = [len(s["blocks"]) for s in spec["stages"]]
    classes = spec["classes"]
    if "classifier.weight" in sd:
        base = sd["conv1.weight"].shape[0]
        return mtf.SeedResNet(base=base, num_block=tuple(blocks), num_classes=classes), "seed SeedResNet (tools/make_torch_fixtures.py)"
    tv = mtf.tv_resnet
    bottleneck = "layer1.0.conv3.weight" in sd
    if "conv1.bias" not in sd and "bn1.weight" in sd and not any(k.endswith("conv1.bias") for k in sd):
        table = {(False, (2, 2, 2, 2)): "resnet18", (False, (3, 4, 6, 3)): "resnet34", (True, (3, 4, 6, 3)): "resnet50",
                 (True, (3, 4, 23, 3)): "resnet101", (True, (3, 8, 36, 3)): "resnet152"}
        name = table.get((bottleneck, tuple(blocks)))
        if name:
            conv2 = sd["layer1.0.conv2.weight"].shape
            if sd["conv1.weight"].shape[0] != 64 or conv2[0] != 64 or conv2[1] != 64:
                return spec_module(spec), "module built from the spec (torchvision names, widths torchvision does not build)"
            return getattr(tv, name)(num_classes=classes), "torchvision.models.%s" % name
    return spec_module(spec), "module built from the spec (canonical names)"


# The exporter writes CIFAR layouts with the names of the PyTorch code they come from. This table
# says, independently of the Swift scheme tables, how those names relate to the canonical ones, so
# the spec-built module (canonical names) can load such a file with strict key matching.
CIFAR_NAMES = {
    "cifar-akamaster (conv1, layer{s}.{b}, shortcut.0/1, linear)": [
        (r"^(layer\d+\.\d+)\.shortcut\.([01])\.", r"\1.downsample.\2."), (r"^linear\.", "fc.")],
    "cifar-flat-avgpool (conv0, bn0, convs.{i}, fc)": [
        (r"^conv0\.", "conv1."), (r"^bn0\.", "bn1."), (r"^convs\.(\d+)\.", r"blocks.\1.")],
}


def load_into_spec_module(model, sd):
    """Loads `sd` with strict key matching into a spec-built module, after translating CIFAR names
    when the file uses them; returns a note saying which names the file had."""
    import re
    wanted = set(model.state_dict().keys())
    if set(sd) == wanted:
        model.load_state_dict(sd, strict=True)
        return "canonical names"
    for layout, rules in CIFAR_NAMES.items():
        renamed = {}
        for k, v in sd.items():
            for pattern, repl in rules:
                k = re.sub(pattern, repl, k)
            renamed[k] = v
        if set(renamed) == wanted and len(renamed) == len(sd):
            model.load_state_dict(renamed, strict=True)
            return "%s names, translated to canonical" % layout
    model.load_state_dict(sd, strict=True)   # raises, listing the keys that differ
    return "canonical names"


def torch_worker(args):
    import numpy as np
    import torch
    spec = json.loads(Path(args.spec).read_text())
    x, y = golden(args.golden)
    results = {}
    for f in args.files:
        ext = Path(f).suffix[1:]
        try:
            if ext == "onnx":
                import onnx
                import onnxruntime as ort
                proto = onnx.load(f)
                onnx.checker.check_model(proto)
                info = stored([ONNX_DTYPES.get(t.data_type, str(t.data_type)) for t in proto.graph.initializer if len(t.dims) >= 2],
                              {p.key: p.value for p in proto.metadata_props})
                sess = ort.InferenceSession(f, providers=["CPUExecutionProvider"])
                out = sess.run(None, {sess.get_inputs()[0].name: x})[0]
                results[ext] = dict(compare(out, y, args.tolerance), loader="onnx.checker + onnxruntime %s" % ort.__version__, **info)
                continue
            if ext == "pth":
                sd = torch.load(f, weights_only=True)
                how = "torch.load(weights_only=True)"
                meta = dict(getattr(sd, "_metadata", {}) or {}).get("resnet_convert", {})
            else:
                from safetensors import safe_open
                from safetensors.torch import load_file
                sd = load_file(f)
                how = "safetensors.torch.load_file"
                with safe_open(f, "pt") as h:
                    meta = dict(h.metadata() or {})
            info = stored([DTYPE_NAMES.get(str(v.dtype).replace("torch.", ""), str(v.dtype)) for v in sd.values() if v.dim() >= 2], meta)
            model, kind = torch_model_for(spec, sd)
            if model is None:
                results[ext] = {"passed": False, "error": "no module class for this layout"}
                continue
            if kind.startswith("module built from the spec"):
                kind = "%s; file has %s" % (kind, load_into_spec_module(model, sd))
            else:
                model.load_state_dict(sd, strict=True)
            model.eval()
            with torch.no_grad():
                out = model(torch.from_numpy(x)).numpy()
            if spec["head"] and spec["head"][-1]["op"] == "softmax" and "softmax" not in kind and kind.startswith(("torchvision", "seed")):
                out = torch.softmax(torch.from_numpy(out), 1).numpy()
            results[ext] = dict(compare(out, y, args.tolerance), loader="%s + load_state_dict(strict=True) into %s (torch %s)" % (how, kind, torch.__version__), **info)
        except Exception as e:  # recorded, not hidden
            results[ext] = {"passed": False, "error": "%s: %s" % (type(e).__name__, e)}
    print(json.dumps(results))


# ----------------------------------------------------------------------------- keras worker

def keras_worker(args):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if args.keras == "tfkeras2":
        import tf_keras as K
    else:
        os.environ["KERAS_BACKEND"] = "tensorflow"
        import keras as K
    spec = json.loads(Path(args.spec).read_text())
    x, y = golden(args.golden)
    nhwc = x.transpose(0, 2, 3, 1)
    blocks = tuple(len(s["blocks"]) for s in spec["stages"])
    results = {}
    for f in args.files:
        try:
            layout = args.layout
            shape = nhwc.shape[1:]
            if layout.startswith("full Keras model"):
                # The file carries its own architecture: nothing is built here.
                model = K.models.load_model(f, compile=False)
                kind = "its own model_config"
                out = model.predict(nhwc, verbose=0)
                results["h5"] = dict(compare(out, y, args.tolerance), loader="%s.models.load_model(compile=False) from %s (%s %s)" % (args.keras, kind, K.__name__, K.__version__))
                continue
            if "seed" in layout:
                sys.path.insert(0, str(HERE))
                import make_fixtures as mf
                base = [op for op in spec["stem"] if op["op"] == "conv"][0]["out_channels"]
                model = mf.build_seed(K, base=base, num_block=blocks, input_shape=shape, classes=spec["classes"])
                kind = "seed Keras model (tools/make_fixtures.py build_seed)"
            else:
                depth = {(3, 4, 6, 3): "50", (3, 4, 23, 3): "101", (3, 8, 36, 3): "152"}.get(blocks)
                stem = [op for op in spec["stem"] if op["op"] == "conv"][0]["out_channels"]
                if depth and stem == 64:
                    name = "ResNet" + depth + ("V2" if "V2" in layout else "")
                    model = getattr(K.applications, name)(weights=None, input_shape=shape, classes=spec["classes"])
                    kind = "keras.applications.%s(weights=None)" % name
                else:
                    # Reduced widths: the keras.applications code with other widths (tools/make_fixtures.py).
                    sys.path.insert(0, str(HERE))
                    import make_fixtures as mf
                    width = [op for op in spec["stages"][0]["blocks"][0]["residual"] if op["op"] == "conv"][0]["out_channels"]
                    build = mf.build_kapp_v2 if "V2" in layout else mf.build_kapp_v1
                    model = build(K, width=width, blocks=blocks, stem=stem, input_shape=shape, classes=spec["classes"])
                    kind = "keras.applications code at reduced width (tools/make_fixtures.py %s)" % build.__name__
            model.load_weights(f)
            out = model.predict(nhwc, verbose=0)
            results["h5"] = dict(compare(out, y, args.tolerance), loader="%s.load_weights into %s (%s %s)" % (args.keras, kind, K.__name__, K.__version__))
        except Exception as e:
            results["h5"] = {"passed": False, "error": "%s: %s" % (type(e).__name__, e)}
    print(json.dumps(results))


# ----------------------------------------------------------------------------- driver

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", choices=["torch", "keras"])
    ap.add_argument("--keras", choices=["tfkeras2", "keras3"], default="tfkeras2")
    ap.add_argument("--spec"); ap.add_argument("--golden"); ap.add_argument("--layout", default="")
    ap.add_argument("--files", nargs="*", default=[])
    ap.add_argument("--bin", default=str(HERE.parent / ".build/debug/resnet-convert"))
    ap.add_argument("--out", default="/tmp/resnet-convert-exports")
    ap.add_argument("--case", nargs=3, action="append", metavar=("NAME", "SOURCE", "GOLDEN"), default=[])
    ap.add_argument("--torch-python", default=sys.executable)
    ap.add_argument("--keras-python", default=sys.executable)
    ap.add_argument("--json")
    ap.add_argument("--tolerance", nargs=2, action="append", metavar=("NAME", "TOL"), default=[],
                    help="a relative tolerance for one case (workers: --tolerance TOL)")
    ap.add_argument("--expect-dtype", nargs=2, action="append", metavar=("NAME", "DTYPE"), default=[])
    args = ap.parse_args()
    if args.worker:
        # Workers get their case's tolerance as a bare number.
        args.tolerance = float(args.tolerance[0][1]) if args.tolerance else TOLERANCE
    if args.worker == "torch":
        return torch_worker(args)
    if args.worker == "keras":
        return keras_worker(args)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tolerances = {n: t for n, t in args.tolerance}
    expected_dtypes = dict(args.expect_dtype)
    all_results = {}
    for name, source, gold in args.case:
        info = json.loads(subprocess.run([args.bin, "inspect", "--json", source], check=True, capture_output=True, text=True).stdout)
        spec_path = out / (name + ".spec.json")
        spec_path.write_text(json.dumps(info["spec"]))
        case = {}
        written = {}
        for fmt in FORMATS:
            target = out / ("%s.%s" % (name, fmt))
            r = subprocess.run([args.bin, "export", source, str(target), "--json"], capture_output=True, text=True)
            if r.returncode != 0:
                # Exit 3 is the tool refusing a layout it has no writer for: reported, not a load failure.
                case[fmt] = {"refused" if r.returncode == 3 else "failed": r.stderr.strip(), "exit": r.returncode, "passed": False}
                continue
            written[fmt] = (str(target), json.loads(r.stdout))
        torch_files = [written[f][0] for f in ("pth", "safetensors", "onnx") if f in written]
        tol = ["--tolerance", name, tolerances[name]] if name in tolerances else []
        r = subprocess.run([args.torch_python, __file__, "--worker", "torch", "--spec", str(spec_path), "--golden", gold, *tol, "--files", *torch_files],
                           capture_output=True, text=True)
        try:
            case.update(json.loads(r.stdout.strip().splitlines()[-1]))
        except (IndexError, json.JSONDecodeError):
            case["torch-worker"] = {"passed": False, "error": r.stderr[-2000:]}
        if "h5" in written:
            for flavour in ("tfkeras2", "keras3"):
                r = subprocess.run([args.keras_python, __file__, "--worker", "keras", "--keras", flavour, "--spec", str(spec_path),
                                    "--golden", gold, *tol, "--layout", written["h5"][1]["layout"], "--files", written["h5"][0]],
                                   capture_output=True, text=True)
                try:
                    case["h5 (%s)" % flavour] = json.loads(r.stdout.strip().splitlines()[-1])["h5"]
                except (IndexError, json.JSONDecodeError, KeyError):
                    case["h5 (%s)" % flavour] = {"passed": False, "error": r.stderr[-2000:]}
        for fmt in ("pth", "safetensors", "onnx"):
            v = case.get(fmt)
            if not v or "weight_dtypes" not in v:
                continue
            missing = [k for k in ("tool_version", "source_sha256") if k not in v["metadata"]]
            if missing:
                v.update(passed=False, error="provenance missing from the metadata: %s" % ", ".join(missing))
            want = expected_dtypes.get(name)
            if want and v["weight_dtypes"] != [want]:
                v.update(passed=False, error="weights stored as %s, expected %s" % ("/".join(v["weight_dtypes"]), want))
        for fmt in written:
            case.setdefault(fmt + " export", {"passed": True, "layout": written[fmt][1]["layout"], "check": written[fmt][1]["check"]})
        all_results[name] = case
        for key, v in case.items():
            if "max_abs_error" in v:
                line = "rel %.3g (tol %.3g)  max|err| %.3g  top-1 %s  %s" % (v["relative_error"], v["tolerance"], v["max_abs_error"],
                                                                         "ok" if v["top1_agree"] else "DIFF", v["loader"])
                if "weight_dtypes" in v:
                    line += "  weights %s, %d metadata keys" % ("/".join(v["weight_dtypes"]), len(v["metadata"]))
                if v.get("error"):
                    line += "  " + v["error"]
            else:
                line = v.get("error") or v.get("refused") or v.get("failed") or v.get("layout", "")
            status = "pass" if v.get("passed") else ("refused" if "refused" in v else "FAIL")
            print("%-28s %-20s %-7s %s" % (name, key, status, line))
    if args.json:
        Path(args.json).write_text(json.dumps(all_results, indent=1))
    ok = all(v.get("passed") or "refused" in v for c in all_results.values() for v in c.values())
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
