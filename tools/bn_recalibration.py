#!/usr/bin/env python3
"""Test accuracy of pixreg checkpoints in eval mode with their own batch-norm running
statistics, and again after re-estimating those statistics from training images alone.

Why: the reference lets the similarity head's pair forwards update the batch-norm running
statistics (reference-training.md, Q13, reproduced by pixreg). When the pair images are an
unusual subset (range "high": only near-duplicate and near-opposite pairs), a model can train
normally (its training-mode batch accuracy is fine) and still collapse in eval mode. A model
whose accuracy comes back once its running statistics are re-estimated (cumulative average
over training images, no pairs, weights untouched) collapsed in those statistics, not in its
weights.

    python3 tools/bn_recalibration.py --data-dir ../shared/datasets --dataset fashion-mnist \\
        experiments/runs/<id>/checkpoints/last-0010.safetensors [...]

`--frozen-ema-batches 10,50,200` then runs that many random training batches through the
model in training mode with PyTorch's momentum 0.1 and the weights frozen, starting from the
re-estimated statistics: if the accuracy holds, the exponential average itself is not too
noisy for these weights, and running statistics that failed during training failed because
the weights moved faster than the average followed.

Needs torch, numpy and safetensors; reads MNIST-format IDX files (mnist, fashion-mnist).
"""

import argparse
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_epoch import load_split, to_model  # noqa: E402
from pixreg_to_torch import load  # noqa: E402


def accuracy(model, images, labels, scaling):
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(images), 1000):
            x = to_model(images[i : i + 1000], scaling["scale"], scaling["offset"])
            correct += int((model(x).argmax(1).numpy() == labels[i : i + 1000]).sum())
    return 100.0 * correct / max(len(images), 1)


def reestimate_running_statistics(model, images, scaling, count, batch):
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None  # cumulative average over the batches below
    model.train()
    order = np.random.default_rng(0).permutation(len(images))[:count]
    with torch.no_grad():
        for i in range(0, len(order), batch):
            model(to_model(images[order[i : i + batch]], scaling["scale"], scaling["offset"]))


def frozen_ema_accuracies(model, images, scaling, counts, batch, test):
    """Test accuracy after each count of `counts` training-mode batches (momentum 0.1,
    weights frozen), cumulatively, starting from the current running statistics."""
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = 0.1
    rng = np.random.default_rng(1)
    done, results = 0, []
    for count in sorted(counts):
        model.train()
        with torch.no_grad():
            while done < count:
                chosen = rng.choice(len(images), batch, replace=False)
                model(to_model(images[chosen], scaling["scale"], scaling["offset"]))
                done += 1
        results.append((count, accuracy(model, *test, scaling)))
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoints", nargs="+")
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--dataset", default="fashion-mnist", choices=["mnist", "fashion-mnist"])
    parser.add_argument("--images", type=int, default=12800, help="training images to use")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument(
        "--scale",
        type=float,
        help="input scale for checkpoints that record none (written before 2026-12-07): 1, "
        "offset 0, for MNIST and Fashion-MNIST models unregularized or regularized by "
        "MNIST-type images",
    )
    parser.add_argument("--offset", type=float, default=0.0, help="input offset, with --scale")
    parser.add_argument(
        "--frozen-ema-batches",
        default="",
        help="comma-separated batch counts (of 64 images) for the frozen-weights EMA check",
    )
    args = parser.parse_args()
    try:
        counts = [int(c) for c in args.frozen_ema_batches.split(",") if c.strip()]
        if any(c < 1 for c in counts):
            raise ValueError("counts must be positive")
    except ValueError as e:
        print(f"error: --frozen-ema-batches: {e}", file=sys.stderr)
        sys.exit(2)
    torch.set_num_threads(1)
    try:
        test_x, test_y = load_split(args.data_dir, args.dataset, "test")
        train_x, _ = load_split(args.data_dir, args.dataset, "train")
    except (OSError, ValueError) as e:
        print(f"error: cannot read {args.dataset} from {args.data_dir}: {e}", file=sys.stderr)
        sys.exit(2)
    for checkpoint in args.checkpoints:
        try:
            model = load(checkpoint)
        except (OSError, ValueError, RuntimeError) as e:
            print(f"error: cannot load {checkpoint}: {e}", file=sys.stderr)
            sys.exit(2)
        scaling = model.input_scaling
        if scaling is None and args.scale is not None:
            scaling = {"scale": args.scale, "offset": args.offset}
        if scaling is None:
            print(f"error: {checkpoint} records no input scaling (give --scale)", file=sys.stderr)
            sys.exit(2)
        before = accuracy(model, test_x, test_y, scaling)
        reestimate_running_statistics(model, train_x, scaling, args.images, args.batch)
        after = accuracy(model, test_x, test_y, scaling)
        print(
            f"{checkpoint}: test accuracy {before:.2f} % with its running statistics, "
            f"{after:.2f} % after re-estimating them from {min(args.images, len(train_x))} "
            "training images"
        )
        for count, acc in frozen_ema_accuracies(model, train_x, scaling, counts, 64, (test_x, test_y)):
            print(f"  then {count} training-mode batches (momentum 0.1, weights frozen): {acc:.2f} %")


if __name__ == "__main__":
    main()
