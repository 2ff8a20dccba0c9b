#!/usr/bin/env python3
"""Load a pixreg checkpoint into PyTorch: the official code's ResNet, built from the
checkpoint's own description, with its state dict loaded strictly.

Needs only torch and safetensors. The architecture comes from the checkpoint's safetensors
``__metadata__`` (``arch``, ``base_channels``, ``in_shape``, ``num_classes``; written by
pixreg since the run-folder curves release) or, for older checkpoints, from the
``model.json`` beside it. The module's parameter and buffer names are the official
``models.py`` ones (``core.sections.S.B.layerL.I.weight``, ``linear``, ``layer_weight``,
``running_mean.L``), so the 128 keys of a ResNet18 checkpoint load with ``strict=True``.

As a library::

    from pixreg_to_torch import load
    model = load("runs/<id>/checkpoints/best-0010.safetensors")   # eval mode
    logits = model(x)   # x: [N, C, H, W] at model scale (see model.input_scaling)

From the shell, the same as ``pixreg predict``::

    python3 tools/pixreg_to_torch.py --checkpoint CK --images X.safetensors --out Y.safetensors

reads the ``images`` tensor ([N, C, H, W] float, at model scale) of X and writes ``logits``
([N, classes], float32) to Y.
"""

import argparse
import json
import os
import sys

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

ARCHS = {
    "resnet18": ("basic", [2, 2, 2, 2]),
    "resnet34": ("basic", [3, 4, 6, 3]),
    "resnet50": ("bottleneck", [3, 4, 6, 3]),
    "resnet101": ("bottleneck", [3, 4, 23, 3]),
}


def conv_bn(cin, cout, kernel, stride, padding, relu_first):
    """Sequential(conv, BN), with a leading ReLU where the official block has one (so the
    conv sits at index 1 and the BN at 2, as in its state dict)."""
    layers = [nn.ReLU()] if relu_first else []
    layers += [
        nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, bias=False),
        nn.BatchNorm2d(cout),
    ]
    return nn.Sequential(*layers)


class ResBlock(nn.Module):
    """The official ``ResBlock``: layer0 = conv (stride s) + BN, layer1 = ReLU + conv 3x3 +
    BN, layer2 (bottleneck) = ReLU + conv 1x1 to 4w + BN, then ReLU(out + shortcut(x))."""

    def __init__(self, kind, cin, width, stride):
        super().__init__()
        expansion = 4 if kind == "bottleneck" else 1
        cout = width * expansion
        if kind == "bottleneck":
            self.layer0 = conv_bn(cin, width, 1, stride, 0, relu_first=False)
            self.layer1 = conv_bn(width, width, 3, 1, 1, relu_first=True)
            self.layer2 = conv_bn(width, cout, 1, 1, 0, relu_first=True)
        else:
            self.layer0 = conv_bn(cin, width, 3, stride, 1, relu_first=False)
            self.layer1 = conv_bn(width, width, 3, 1, 1, relu_first=True)
            self.layer2 = None
        if stride == 1 and cin == cout:
            self.shortcut = None
        else:
            self.shortcut = conv_bn(cin, cout, 1, stride, 0, relu_first=False)

    def forward(self, x):
        out = self.layer1(self.layer0(x))
        if self.layer2 is not None:
            out = self.layer2(out)
        skip = x if self.shortcut is None else self.shortcut(x)
        return F.relu(out + skip)


class Core(nn.Module):
    """Stem (conv 7x7 stride 1, BN, ReLU; no max-pool) and four sections."""

    def __init__(self, kind, blocks, in_channels, base):
        super().__init__()
        expansion = 4 if kind == "bottleneck" else 1
        sections = [
            nn.Sequential(
                nn.Conv2d(in_channels, base, 7, stride=1, padding=3, bias=False),
                nn.BatchNorm2d(base),
                nn.ReLU(),
            )
        ]
        cin = base
        for i, count in enumerate(blocks):
            width = base * 2**i
            layers = []
            for b in range(count):
                stride = 1 if i == 0 or b > 0 else 2
                layers.append(ResBlock(kind, cin, width, stride))
                cin = width * expansion
            sections.append(nn.Sequential(*layers))
        self.sections = nn.ModuleList(sections)

    def forward(self, x):
        for section in self.sections:
            x = section(x)
        return x


class ResNet(nn.Module):
    """The official ResNet with its similarity head's parameters (``layer_weight`` and the
    per-layer ``running_mean`` vectors; only the classification forward is defined here)."""

    def __init__(self, arch, in_shape, num_classes, base_channels):
        super().__init__()
        if arch not in ARCHS:
            raise ValueError(f"unknown arch {arch!r} (expected one of {sorted(ARCHS)})")
        kind, blocks = ARCHS[arch]
        expansion = 4 if kind == "bottleneck" else 1
        self.core = Core(kind, blocks, in_shape[0], base_channels)
        h, w = in_shape[1], in_shape[2]
        for _ in range(3):
            h, w = (h - 1) // 2 + 1, (w - 1) // 2 + 1
        features = 8 * base_channels * expansion * (h // 4) * (w // 4)
        self.linear = nn.Linear(features, num_classes)
        self.layer_weight = nn.Parameter(torch.zeros(5))
        channels = [base_channels] + [base_channels * expansion * 2**i for i in range(4)]
        self.running_mean = nn.ParameterList(
            [nn.Parameter(torch.zeros(c), requires_grad=False) for c in channels]
        )
        self.input_scaling = None

    def forward(self, x):
        out = F.avg_pool2d(self.core(x), 4)
        return self.linear(out.flatten(1))


def describe(checkpoint):
    """(arch, in_shape, num_classes, base_channels, metadata) of a checkpoint: from its
    ``__metadata__``, else from the ``model.json`` in its folder."""
    with safe_open(checkpoint, "pt") as f:
        metadata = f.metadata() or {}
    if "arch" in metadata:
        return (
            metadata["arch"],
            json.loads(metadata["in_shape"]),
            int(metadata["num_classes"]),
            int(metadata["base_channels"]),
            metadata,
        )
    model_json = os.path.join(os.path.dirname(os.path.abspath(checkpoint)), "model.json")
    if not os.path.isfile(model_json):
        raise ValueError(
            f"{checkpoint} has no architecture metadata and no model.json beside it"
        )
    with open(model_json) as f:
        cfg = json.load(f)
    return cfg["arch"], cfg["in_shape"], cfg["num_classes"], cfg["base_channels"], metadata


def load(checkpoint):
    """The model of a pixreg checkpoint, strictly loaded, in eval mode. Its
    ``input_scaling`` attribute is ``{"scale": s, "offset": o}`` (model input
    ``s * pixel / 255 + o``) when the checkpoint records it, else None."""
    arch, in_shape, num_classes, base, metadata = describe(checkpoint)
    model = ResNet(arch, in_shape, num_classes, base)
    model.load_state_dict(load_file(checkpoint), strict=True)
    if "input_scaling" in metadata:
        model.input_scaling = json.loads(metadata["input_scaling"])
    return model.eval()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="pixreg .safetensors checkpoint")
    parser.add_argument("--images", required=True, help="safetensors file with the images")
    parser.add_argument("--key", default="images", help="name of the images tensor")
    parser.add_argument("--out", required=True, help="output safetensors file (logits)")
    args = parser.parse_args(argv)
    try:
        model = load(args.checkpoint)
        images = load_file(args.images)
        if args.key not in images:
            raise ValueError(f"{args.images} has no tensor {args.key!r}")
        x = images[args.key].float()
        with torch.no_grad():
            logits = model(x).contiguous()
        save_file({"logits": logits}, args.out)
    except Exception as e:  # one line and exit 2, as pixreg's own errors
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
