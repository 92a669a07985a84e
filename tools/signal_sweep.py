#!/usr/bin/env python3
"""Interrupts `convert` and `export` of a full-size ResNet-50 at random moments and checks that
nothing is left behind.

    swift build -c release
    tools/signal_sweep.py --bin .build/release/resnet-convert [--runs 50] [--work DIR]

Each run starts with an old output already in place (a ResNet-18 written by the same command), so
both promises are checked: the output directory holds exactly that one file afterwards (no
temporary files, named or not), and it is either the old output, byte for byte, or a complete new
one (byte-identical to a reference run, or, for formats whose bytes vary between runs, equal to the
reference tensor for tensor by `resnet-convert diff`). The signal (SIGINT or SIGTERM, alternately)
comes at a moment drawn uniformly from 0 to 1.1 times the uninterrupted run's duration (the faster
of two reference runs), so some runs
finish first. A run killed by the signal must have printed the one-line notice and died of that
signal; its notice must agree with the file found ("nothing was written" means the old output).
A signal during start-up, before the command has installed its handler, kills it silently: that
is counted apart and passes when the old output is intact.

Every other pair of runs selects the named temporary file (RESNET_CONVERT_NAMED_TEMP=1), which
only the signal handler removes; the others write through an unnamed O_TMPFILE file.

Modes: `convert` (verified path: write, read back, compare), `convert --no-verify` (the streaming
writer) and `export` (cycling through .pth, .safetensors, .h5 and .onnx).

Models: --model and --old-model (PyTorch state dicts), or generated with random weights into the
work directory by --torch-python running tools/bench/bench_forward.py's model builder (torch only;
this script imports neither torch nor tensorflow). About 150 MB.
Prints one summary line per mode and exits 1 when any run broke a promise.
"""
import argparse
import hashlib
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXPORT_FORMATS = ["pth", "safetensors", "h5", "onnx"]


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def make_models(torch_python, work):
    code = (
        "import sys, torch\n"
        f"sys.path.insert(0, {str(ROOT / 'tools' / 'bench')!r})\n"
        "import bench_forward as b\n"
        "for name in ['resnet50', 'resnet18']:\n"
        f"    torch.save(b.build(name, 'v1.5').state_dict(), {str(work)!r} + '/' + name + '.pth')\n"
    )
    subprocess.run([torch_python, "-c", code], check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})


class Mode:
    def __init__(self, name, args_for, suffixes):
        self.name = name
        self.args_for = args_for     # (input, output) -> argv tail
        self.suffixes = suffixes     # output extensions, cycled


def run(binary, argv, **kw):
    return subprocess.run([binary] + argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **kw)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bin", required=True, help="resnet-convert binary (release build)")
    p.add_argument("--runs", type=int, default=50, help="interrupted runs per mode (default 50)")
    p.add_argument("--work", help="work directory (default: a new one under /tmp)")
    p.add_argument("--model", help="full-size PyTorch state dict (default: generated)")
    p.add_argument("--old-model", help="the model whose outputs are in place before each run (default: generated ResNet-18)")
    p.add_argument("--torch-python", default=os.environ.get("TORCH_PY", "python3"))
    p.add_argument("--modes", default="convert,convert-no-verify,export")
    p.add_argument("--seed", type=int, default=15)
    a = p.parse_args()
    rng = random.Random(a.seed)
    binary = str(Path(a.bin).resolve())
    work = Path(a.work) if a.work else Path(subprocess.check_output(["mktemp", "-d"], text=True).strip())
    work.mkdir(parents=True, exist_ok=True)
    if not a.model or not a.old_model:
        print(f"generating models in {work}", file=sys.stderr)
        make_models(a.torch_python, work)
    model = Path(a.model or work / "resnet50.pth").resolve()
    old_model = Path(a.old_model or work / "resnet18.pth").resolve()

    modes = {
        "convert": Mode("convert", lambda i, o: ["convert", i, o], ["rnw"]),
        "convert-no-verify": Mode("convert --no-verify", lambda i, o: ["convert", i, o, "--no-verify"], ["rnw"]),
        "export": Mode("export", lambda i, o: ["export", i, o], EXPORT_FORMATS),
    }
    failures = 0
    for key in a.modes.split(","):
        mode = modes[key]
        out_dir = work / f"out-{key}"
        refs = {}
        for suffix in mode.suffixes:
            # The old output (ResNet-18) and the reference new one (ResNet-50), and how long a run takes.
            ref_dir = work / f"ref-{key}-{suffix}"
            shutil.rmtree(ref_dir, ignore_errors=True)
            ref_dir.mkdir()
            old, ref = ref_dir / f"old.{suffix}", ref_dir / f"new.{suffix}"
            r = run(binary, mode.args_for(str(old_model), str(old)))
            assert r.returncode == 0, r.stderr.decode()
            start = time.monotonic()
            r = run(binary, mode.args_for(str(model), str(ref)))
            duration = time.monotonic() - start
            assert r.returncode == 0, r.stderr.decode()
            r2 = ref_dir / f"again.{suffix}"
            start = time.monotonic()
            run(binary, mode.args_for(str(model), str(r2)), check=True)
            duration = min(duration, time.monotonic() - start)
            refs[suffix] = (old, sha256(old), ref, sha256(ref), sha256(r2) == sha256(ref), duration)
            os.unlink(r2)
        counts = {"finished": 0, "interrupted": 0, "killed during start-up": 0, "old intact": 0, "new complete": 0, "leftover files": 0, "broken": 0}
        durations = []
        for i in range(a.runs):
            suffix = mode.suffixes[i % len(mode.suffixes)]
            old, old_sha, ref, ref_sha, deterministic, duration = refs[suffix]
            durations.append(duration)
            shutil.rmtree(out_dir, ignore_errors=True)
            out_dir.mkdir()
            target = out_dir / f"model.{suffix}"
            shutil.copy2(old, target)
            sig = signal.SIGINT if i % 2 == 0 else signal.SIGTERM
            named = (i // 2) % 2 == 1
            delay = rng.uniform(0, 1.1 * duration)
            env = {**os.environ, "RESNET_CONVERT_NAMED_TEMP": "1"} if named else None
            proc = subprocess.Popen([binary] + mode.args_for(str(model), str(target)),
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
            try:
                proc.wait(timeout=delay)
            except subprocess.TimeoutExpired:
                proc.send_signal(sig)
            _, err = proc.communicate()
            err = err.decode(errors="replace")
            problems = []
            left = sorted(os.listdir(out_dir))
            if left != [target.name]:
                counts["leftover files"] += 1
                problems.append(f"directory holds {left}")
            got = sha256(target) if target.exists() else None
            if got == old_sha:
                state = "old"
                counts["old intact"] += 1
            elif got == ref_sha:
                state = "new"
                counts["new complete"] += 1
            elif got is not None and not deterministic and run(binary, ["diff", str(ref), str(target)]).returncode == 0:
                state = "new"
                counts["new complete"] += 1
            else:
                state = "broken"
                problems.append("output is neither the old file nor a complete new one")
            if proc.returncode == 0:
                counts["finished"] += 1
                if state != "new":
                    problems.append("finished, but the output is not the new one")
            elif proc.returncode == -sig:
                counts["interrupted"] += 1
                lines = [l for l in err.splitlines() if l.startswith("interrupted: ")]
                if not lines and not err and state == "old":
                    # Killed during start-up, before the command installed its handler: silent,
                    # and nothing was touched.
                    counts["killed during start-up"] += 1
                elif len(lines) != 1:
                    problems.append(f"expected one 'interrupted:' line, stderr: {err[-300:]!r}")
                elif lines[0].endswith("nothing was written") and state != "old":
                    problems.append(f"said nothing was written, but the output is {state}")
            else:
                problems.append(f"exit status {proc.returncode}, stderr: {err[-300:]!r}")
            if problems:
                failures += 1
                counts["broken"] += 1
                print(f"  {mode.name} run {i} (.{suffix}, {'named' if named else 'unnamed'} temp, {sig.name} at {delay:.2f} s): " + "; ".join(problems), file=sys.stderr)
        shutil.rmtree(out_dir, ignore_errors=True)
        summary = ", ".join(f"{v} {k}" for k, v in counts.items())
        print(f"{mode.name}: {a.runs} runs (uninterrupted run {min(durations):.1f}-{max(durations):.1f} s): {summary}")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
