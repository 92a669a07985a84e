#!/usr/bin/env python3
"""Adds per-layer activations, computed by the real PyTorch, to the committed torch fixture goldens.

For the models below, the committed state dict is loaded into the module that made it (the builders of
tools/make_torch_fixtures.py), forward hooks record module outputs for the stored `input`, and `io.npz`
gains arrays `layer:<canonical module name>` (NCHW, like the input):
  layer:conv1          the stem convolution
  layer:layer{S}.{B}   a whole residual block (torchvision `layerS.B`; the seed's `conv{S+1}.B`)
  layer:fc             the classifier (torchvision `fc`, CIFAR `linear`, the seed's `classifier`)
The stored `output` is recomputed and must be identical, so the goldens stay those in MANIFEST.json.

Run with the torch fixtures venv:  python tools/make_torch_layer_goldens.py
"""
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_torch_fixtures as mtf  # noqa: E402

# fixture → (state dict file, {torch module name: canonical name} or a function giving it)
MODELS = {
    "tv-resnet18-mini": "tv-resnet18-mini.pth",
    "tv-resnet50-mini": "tv-resnet50-mini.pth",
    "seed-torch": "seed-torch.pth",
    "cifar-resnet20-optionB": "cifar-resnet20-optionB.pth",
}


def canonical(model_name, module_name):
    parts = module_name.split(".")
    if module_name == "conv1":
        return "conv1"
    if module_name in ("fc", "linear", "classifier"):
        return "fc"
    if model_name == "seed-torch":
        if len(parts) == 2 and parts[0] in ("conv2", "conv3", "conv4", "conv5"):
            return f"layer{int(parts[0][4:]) - 1}.{parts[1]}"
        return None
    if len(parts) == 2 and parts[0].startswith("layer"):
        return module_name
    return None


def main():
    torch.set_num_threads(1)
    models = mtf.mini_models()
    for name, filename in MODELS.items():
        builder, chw, _seed, _ = models[name]
        folder = os.path.join(mtf.TORCH_OUT, name)
        model = builder()
        state = torch.load(os.path.join(folder, filename), weights_only=True)
        model.load_state_dict(state, strict=True)
        model.eval()
        captured = {}
        for module_name, module in model.named_modules():
            c = canonical(name, module_name)
            if c is not None:
                module.register_forward_hook(lambda _m, _i, out, c=c: captured.__setitem__(c, out.detach().float().numpy()))
        io = dict(np.load(os.path.join(folder, "io.npz")))
        with torch.no_grad():
            y = model(torch.from_numpy(io["input"])).float().numpy()
        if not np.array_equal(y, io["output"]):
            sys.exit(f"{name}: recomputed output differs from the committed golden by {np.max(np.abs(y - io['output']))}")
        arrays = {k: v for k, v in io.items() if not k.startswith("layer:")}
        for c, value in captured.items():
            arrays[f"layer:{c}"] = value.astype(np.float32)
        mtf.write_npz(os.path.join(folder, "io.npz"), arrays)
        print(name, sorted(captured))


if __name__ == "__main__":
    main()
