"""Times PyTorch, onnxruntime and OpenVINO on ResNets shaped like the ones resnet-convert runs, and writes the
PyTorch state dicts (torchvision key names) so resnet-convert can read the very same weights once it
reads .pth files.

Run with a Python that has torch, onnx, onnxscript and onnxruntime (tools/bench/requirements.txt).
Never imports tensorflow (the two must not share a process). torchvision is not needed: the models
are defined here with torchvision's module names.

  python bench_forward.py make OUT_DIR VARIANT      writes resnet50.pth, resnet18.pth, *.onnx
  python bench_forward.py time OUT_DIR MODEL BATCH THREADS ITERATIONS VARIANT   one JSON line per runtime
  python bench_forward.py table RESULTS.jsonl      the ratio table

VARIANT v1 puts a bottleneck's stride on its first 1x1 convolution, as keras.applications does;
v1.5 puts it on the 3x3, as torchvision does. Both have the same weights; v1 does less work.
"""
import json
import os
import statistics
import sys
import time

import numpy as np
import torch
from torch import nn


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin, width, stride, variant):
        super().__init__()
        s1, s3 = (stride, 1) if variant == "v1" else (1, stride)
        out = width * 4
        self.conv1 = nn.Conv2d(cin, width, 1, stride=s1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=s3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or cin != out:
            self.downsample = nn.Sequential(nn.Conv2d(cin, out, 1, stride=stride, bias=False), nn.BatchNorm2d(out))

    def forward(self, x):
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return self.relu(y + (x if self.downsample is None else self.downsample(x)))


class Basic(nn.Module):
    expansion = 1

    def __init__(self, cin, width, stride, variant):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, width, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or cin != width:
            self.downsample = nn.Sequential(nn.Conv2d(cin, width, 1, stride=stride, bias=False), nn.BatchNorm2d(width))

    def forward(self, x):
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return self.relu(y + (x if self.downsample is None else self.downsample(x)))


class ResNet(nn.Module):
    def __init__(self, block, counts, variant):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        cin = 64
        for i, (width, n) in enumerate(zip([64, 128, 256, 512], counts)):
            blocks = []
            for b in range(n):
                blocks.append(block(cin, width, 2 if i > 0 and b == 0 else 1, variant))
                cin = width * block.expansion
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, 1000)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def build(name, variant):
    torch.manual_seed(0)
    model = ResNet(Bottleneck, [3, 4, 6, 3], variant) if name == "resnet50" else ResNet(Basic, [2, 2, 2, 2], variant)
    for m in model.modules():          # non-trivial BN statistics, as a trained model has
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return model.eval()


def make(out_dir, variant):
    os.makedirs(out_dir, exist_ok=True)
    for name in ["resnet50", "resnet18"]:
        model = build(name, variant)
        torch.save(model.state_dict(), os.path.join(out_dir, f"{name}.pth"))
        x = torch.zeros(1, 3, 224, 224)
        # The TorchScript exporter with a dynamic batch axis; fixed 224x224 as in every timing here.
        torch.onnx.export(model, (x,), os.path.join(out_dir, f"{name}.onnx"), input_names=["input"],
                          output_names=["output"], dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
                          opset_version=17, dynamo=False)


def timed(fn, iterations, warmup=3):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iterations):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times), min(times)


def time_all(out_dir, name, batch, threads, iterations, variant):
    x = np.sin(np.arange(batch * 3 * 224 * 224, dtype=np.float64) * 0.001).astype(np.float32).reshape(batch, 3, 224, 224)
    torch.set_num_threads(threads)
    model = build(name, variant)
    model.load_state_dict(torch.load(os.path.join(out_dir, f"{name}.pth")))
    tx = torch.from_numpy(x)
    with torch.inference_mode():
        med, low = timed(lambda: model(tx), iterations)
    print(json.dumps({"runtime": f"pytorch {torch.__version__}", "model": name, "batch": batch, "threads": threads,
                      "median_ms": med, "min_ms": low}), flush=True)

    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(os.path.join(out_dir, f"{name}.onnx"), options, providers=["CPUExecutionProvider"])
    med, low = timed(lambda: session.run(None, {"input": x}), iterations)
    print(json.dumps({"runtime": f"onnxruntime {ort.__version__}", "model": name, "batch": batch, "threads": threads,
                      "median_ms": med, "min_ms": low}), flush=True)

    # OpenVINO on the same ONNX file, reshaped to this batch (static shapes are its fast path), one
    # stream, `threads` inference threads, f32 arithmetic: on CPUs with bf16 or AMX units its default
    # precision hint may be bf16, which is not the f32 computation the others do.
    import openvino as ov
    core = ov.Core()
    ov_model = core.read_model(os.path.join(out_dir, f"{name}.onnx"))
    ov_model.reshape([batch, 3, 224, 224])
    compiled = core.compile_model(ov_model, "CPU", {"INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": 1,
                                                    "PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"})
    request = compiled.create_infer_request()
    med, low = timed(lambda: request.infer({0: x}), iterations)
    print(json.dumps({"runtime": f"openvino {ov.__version__.split('-')[0]}", "model": name, "batch": batch,
                      "threads": threads, "median_ms": med, "min_ms": low}), flush=True)


def table(path):
    """Prints the side-by-side table from the JSON lines run.sh collected."""
    rows = [json.loads(line) for line in open(path) if line.strip()]
    cases = []
    for r in rows:
        key = (r["model"], r["batch"])
        if key not in cases:
            cases.append(key)
    print(f"{'model':<10} {'batch':>5} {'ours ms':>9} {'ort ms':>9} {'ov ms':>9} {'torch ms':>9} {'ours/best':>10} {'ours/ort':>9} {'ours/ov':>8} {'ours/torch':>10}")
    for model, batch in cases:
        got = {r["runtime"].split()[0]: r for r in rows if (r["model"], r["batch"]) == (model, batch)}
        ours, ort, ov, pt = got.get("resnet-convert"), got.get("onnxruntime"), got.get("openvino"), got.get("pytorch")
        if not (ours and ort and ov and pt):
            print(f"{model:<10} {batch:>5}  incomplete: {sorted(got)}")
            continue
        o = ours["median_ms"]
        best = min(ort["median_ms"], ov["median_ms"])
        print(f"{model:<10} {batch:>5} {o:>9.1f} {ort['median_ms']:>9.1f} {ov['median_ms']:>9.1f} {pt['median_ms']:>9.1f} "
              f"{o / best:>10.2f} {o / ort['median_ms']:>9.2f} {o / ov['median_ms']:>8.2f} {o / pt['median_ms']:>10.2f}")
    print("(medians of timed single calls; minima are in the JSON lines; ours/best is against the faster of onnxruntime and OpenVINO)")


if __name__ == "__main__":
    if sys.argv[1] == "make":
        make(sys.argv[2], sys.argv[3])
    elif sys.argv[1] == "table":
        table(sys.argv[2])
    else:
        _, _, out_dir, name, batch, threads, iterations, variant = sys.argv
        time_all(out_dir, name, int(batch), int(threads), int(iterations), variant)
