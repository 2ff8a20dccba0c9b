#!/usr/bin/env python3
"""The PyTorch side of `cargo xtask bench train-step`: the same model and step in PyTorch.

ResNet of the reference (`models.py`): 7x7 stride-1 stem, no max-pool, basic blocks,
avg_pool2d(4), linear head; the two-input head compares the stem and the four section outputs
of two batches by centred cosine against running means (beta 0.9), combined with
softmax(layer_weight). One step = CE on `--batch` images (+ with `--pairs` > 0 the arctanh
pair loss on that many pairs, alpha 1), backward, SGD momentum 0.9, lr 0.01: the workload of
`pixreg_models::bench::train_step`.

    python3 tools/bench_train_step.py --arch resnet18 --base-channels 16 \
        --in-shape 1,32,32 --batch 64 --pairs 16 --steps 10

Prints one line per step, then one JSON object (`median_ms`, `median_cpu_ms` = process CPU
time per step, `peak_rss_mb`, ...) as the last
line. `--device cuda:0` runs it on a GPU (each step ends with a synchronisation). Exits with
status 2 when torch is not importable.
"""

import argparse
import json
import resource
import statistics
import sys
import time

try:
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
except ImportError:
    print("torch is not importable (pip install torch)", file=sys.stderr)
    sys.exit(2)

BLOCKS = {"resnet18": [2, 2, 2, 2], "resnet34": [3, 4, 6, 3]}


class ResBlock(nn.Module):
    def __init__(self, in_c, width, stride):
        super().__init__()
        self.layer0 = nn.Sequential(
            nn.Conv2d(in_c, width, 3, stride, 1, bias=False), nn.BatchNorm2d(width)
        )
        self.layer1 = nn.Sequential(
            nn.ReLU(), nn.Conv2d(width, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width)
        )
        self.shortcut = nn.Sequential()
        if stride != 1 or in_c != width:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_c, width, 1, stride, bias=False), nn.BatchNorm2d(width)
            )

    def forward(self, x):
        return F.relu(self.layer1(self.layer0(x)) + self.shortcut(x))


class ResNet(nn.Module):
    def __init__(self, blocks, in_c, base, classes):
        super().__init__()
        sections = [
            nn.Sequential(
                nn.Conv2d(in_c, base, 7, 1, 3, bias=False), nn.BatchNorm2d(base), nn.ReLU()
            )
        ]
        c = base
        for i, n in enumerate(blocks):
            width = base << i
            layers = []
            for b in range(n):
                layers.append(ResBlock(c, width, (1 if i == 0 else 2) if b == 0 else 1))
                c = width
            sections.append(nn.Sequential(*layers))
        self.sections = nn.ModuleList(sections)
        self.linear = nn.Linear(c, classes)
        self.layer_weight = nn.Parameter(torch.zeros(len(sections)))
        self.running_means = [torch.zeros(base << max(i - 1, 0)) for i in range(len(sections))]
        self.beta = 0.9

    def features(self, x):
        out = []
        for s in self.sections:
            x = s(x)
            out.append(x)
        return out

    def forward(self, a, b=None):
        if b is None:
            x = self.features(a)[-1]
            return self.linear(torch.flatten(F.avg_pool2d(x, 4), 1))
        fa, fb = self.features(a), self.features(b)
        scores = []
        for l, (xa, xb) in enumerate(zip(fa, fb)):
            with torch.no_grad():
                m = torch.cat([xa, xb]).mean(dim=(0, 2, 3))
                self.running_means[l] = self.beta * self.running_means[l] + (1 - self.beta) * m
            mean = self.running_means[l].view(1, -1, 1, 1)
            scores.append(
                F.cosine_similarity(
                    torch.flatten(xa - mean, 1), torch.flatten(xb - mean, 1), eps=1e-8
                )
            )
        w = torch.softmax(self.layer_weight, 0)
        return (torch.stack(scores, 1) * w).sum(1)


def g(v, eps=1e-5):
    return torch.log(1 + v + eps) - torch.log(1 - v + eps)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--arch", default="resnet18", choices=sorted(BLOCKS))
    p.add_argument("--base-channels", type=int, default=64)
    p.add_argument("--in-shape", default="1,32,32")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--pairs", type=int, default=16)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--device", default="cpu", help="cpu or cuda:N")
    args = p.parse_args()
    dev = torch.device(args.device)
    c, h, w = (int(v) for v in args.in_shape.split(","))
    torch.manual_seed(0)
    model = ResNet(BLOCKS[args.arch], c, args.base_channels, 10).to(dev).train()
    model.running_means = [m.to(dev) for m in model.running_means]
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    images = (torch.rand(args.batch, c, h, w) * 2 - 1).to(dev)
    labels = (torch.arange(args.batch) % 10).to(dev)
    k = max(args.pairs, 1)
    pair_a = (torch.rand(k, c, h, w) * 2 - 1).to(dev)
    pair_b = (torch.rand(k, c, h, w) * 2 - 1).to(dev)
    targets = (torch.rand(k) * 0.9).to(dev)
    times, cpu_times = [], []
    for step in range(args.warmup + args.steps):
        start = time.perf_counter()
        cpu_start = time.process_time()
        loss = F.cross_entropy(model(images), labels)
        if args.pairs > 0:
            loss = loss + ((g(model(pair_a, pair_b)) - g(targets)) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        ms = (time.perf_counter() - start) * 1e3
        cpu_ms = (time.process_time() - cpu_start) * 1e3
        if step >= args.warmup:
            times.append(ms)
            cpu_times.append(cpu_ms)
            print(f"step {step - args.warmup}: {ms:.1f} ms")
    report = {
        "framework": f"pytorch {torch.__version__}",
        "arch": args.arch,
        "base_channels": args.base_channels,
        "in_shape": [c, h, w],
        "batch": args.batch,
        "pairs": args.pairs,
        "threads": torch.get_num_threads(),
        "device": args.device,
        "step_ms": times,
        "median_ms": statistics.median(times),
        "step_cpu_ms": cpu_times,
        "median_cpu_ms": statistics.median(cpu_times),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    if dev.type == "cuda":
        report["peak_gpu_mb"] = torch.cuda.max_memory_allocated(dev) / 2**20
    print(json.dumps(report))


if __name__ == "__main__":
    main()
