# Times onnxruntime on an ONNX file the way tools/bench/bench_forward.py does (used by
# onnx_vs_ours.sh): THREADS intra-op threads, sequential execution, the same sin() input as
# `resnet-convert bench`; prints one JSON line.
#   python ort_time.py MODEL.onnx BATCH THREADS ITERATIONS
import json, statistics, sys, time
import numpy as np, onnxruntime as ort
path, batch, threads, iters = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
x = np.sin(np.arange(batch * 3 * 224 * 224, dtype=np.float64) * 0.001).astype(np.float32).reshape(batch, 3, 224, 224)
o = ort.SessionOptions(); o.intra_op_num_threads = threads; o.inter_op_num_threads = 1
o.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
s = ort.InferenceSession(path, o, providers=["CPUExecutionProvider"])
name = s.get_inputs()[0].name
for _ in range(3): s.run(None, {name: x})
t = []
for _ in range(iters):
    a = time.perf_counter(); s.run(None, {name: x}); t.append((time.perf_counter() - a) * 1000)
print(json.dumps({"runtime": "onnxruntime " + ort.__version__, "batch": batch, "median_ms": statistics.median(t), "min_ms": min(t)}))
