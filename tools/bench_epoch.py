#!/usr/bin/env python3
"""The PyTorch side of `cargo xtask bench epoch`: one training epoch of a pixreg config done
the way the official training loop does it, timed with the same split as pixreg's.

The work (spec reference-training.md §5-§9): the train / validation / test images of an
MNIST-type task read from the IDX files, a shuffled `DataLoader` of classification batches,
the regularization images' centred-cosine pixel similarities thresholded at Th (prepared
before the epoch, timed apart), a shuffled, drop-last `DataLoader` over the selected pairs with
k per batch (a fresh iterator each epoch, restarted when exhausted), and per step:
CE on the batch + alpha * the arctanh pair loss (two core passes on the pair halves with the
running-mean update), backward, SGD with momentum; then evaluation in eval mode without
gradients of validation and test (and train, with eval_train). The model is the reference
ResNet of `tools/bench_train_step.py`.

    python3 tools/bench_epoch.py --spec spec.json

`spec.json` is written by xtask from the resolved pixreg config (dataset, data_dir, counts,
batch, pairs, n_images, threshold, range, alpha, lr, momentum, weight_decay, arch,
base_channels, in_shape, scale, offset, eval_train, seed). Thread counts follow
OMP_NUM_THREADS; the DataLoader runs in the main process (num_workers 0), as the official code
does. The last line printed is one JSON object: `epoch_seconds`, `split_seconds`
(data, pairs, forward, backward, optimizer, evaluation), `targets_seconds`, `steps`,
`peak_rss_mb`. Exits with status 2 when torch is not importable or the spec cannot be used.
"""

import gzip
import json
import os
import resource
import struct
import sys
import time

try:
    import numpy as np
    import torch
    import torch.nn.functional as F
    from torch.utils.data import DataLoader, TensorDataset
except ImportError as e:
    print(f"torch is not importable: {e} (pip install torch numpy)", file=sys.stderr)
    sys.exit(2)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_train_step import BLOCKS, ResNet, g  # noqa: E402

IDX = {
    "mnist": "mnist",
    "fashion-mnist": "fashion-mnist",
}


def read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic, = struct.unpack(">I", data[:4])
    dims = magic & 0xFF
    shape = struct.unpack(">" + "I" * dims, data[4 : 4 + 4 * dims])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def load_split(data_dir, dataset, split):
    folder = os.path.join(data_dir, IDX[dataset])
    prefix = "train" if split == "train" else "t10k"
    images = read_idx(os.path.join(folder, f"{prefix}-images-idx3-ubyte.gz"))
    labels = read_idx(os.path.join(folder, f"{prefix}-labels-idx1-ubyte.gz"))
    return images, labels


def to_model(images, scale, offset):
    x = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)
    return x * scale + offset


def selected_pairs(reg_images, threshold, kind):
    """(i, j) with i < j kept by the range rule, and their {-1, 0, 1} targets (§5.2-5.3)."""
    x = reg_images.reshape(reg_images.shape[0], -1).astype(np.float64)
    x -= x.mean(axis=1, keepdims=True)
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    s = x @ x.T
    i, j = np.triu_indices(s.shape[0], k=1)
    v = s[i, j]
    keep = {
        "all": np.ones_like(v, dtype=bool),
        "high": np.abs(v) > threshold,
        "low": np.abs(v) < threshold,
        "positive": (v > threshold) | (np.abs(v) < threshold),
        "negative": (v < -threshold) | (np.abs(v) < threshold),
        "high_positive": v > threshold,
    }[kind]
    targets = np.where(v > threshold, 1.0, np.where(v < -threshold, -1.0, 0.0))
    return (
        torch.from_numpy(i[keep].astype(np.int64)),
        torch.from_numpy(j[keep].astype(np.int64)),
        torch.from_numpy(targets[keep].astype(np.float32)),
    )


def evaluate(model, loader):
    loss, correct, n = 0.0, 0, 0
    with torch.no_grad():
        for x, y in loader:
            logits = model(x)
            loss += F.cross_entropy(logits, y, reduction="sum").item()
            correct += (logits.argmax(1) == y).sum().item()
            n += len(y)
    return loss / max(n, 1), 100.0 * correct / max(n, 1)


def main():
    if len(sys.argv) != 3 or sys.argv[1] != "--spec":
        print("usage: bench_epoch.py --spec spec.json", file=sys.stderr)
        return 2
    with open(sys.argv[2]) as f:
        spec = json.load(f)
    if spec["dataset"] not in IDX or spec["arch"] not in BLOCKS:
        print(
            f"error: the PyTorch epoch covers MNIST-type tasks and ResNet18/34, "
            f"not {spec['dataset']} / {spec['arch']}",
            file=sys.stderr,
        )
        return 2
    torch.manual_seed(spec["seed"])
    c, h, w = spec["in_shape"]
    train_x, train_y = load_split(spec["data_dir"], spec["dataset"], "train")
    test_x, test_y = load_split(spec["data_dir"], spec["dataset"], "test")
    n_train, n_valid, n_test = spec["n_train"], spec["n_valid"], spec["n_test"]
    scale, offset = spec["scale"], spec["offset"]
    train = TensorDataset(
        to_model(train_x[:n_train], scale, offset), torch.from_numpy(train_y[:n_train].astype(np.int64))
    )
    valid = TensorDataset(
        to_model(train_x[n_train : n_train + n_valid], scale, offset),
        torch.from_numpy(train_y[n_train : n_train + n_valid].astype(np.int64)),
    )
    test = TensorDataset(
        to_model(test_x[:n_test], scale, offset), torch.from_numpy(test_y[:n_test].astype(np.int64))
    )
    bs = spec["batch"]
    train_loader = DataLoader(train, batch_size=bs, shuffle=True)
    eval_loaders = [DataLoader(valid, batch_size=bs), DataLoader(test, batch_size=bs)]
    if spec["eval_train"]:
        eval_loaders.append(DataLoader(train, batch_size=bs, shuffle=True))

    model = ResNet(BLOCKS[spec["arch"]], c, spec["base_channels"], 10)
    opt = torch.optim.SGD(
        model.parameters(),
        lr=spec["lr"],
        momentum=spec["momentum"],
        weight_decay=spec["weight_decay"],
    )
    alpha = spec["alpha"]
    t0 = time.perf_counter()
    pair_loader = None
    if alpha > 0:
        reg = train_x[: spec["n_images"]]
        rows, cols, targets = selected_pairs(reg, spec["threshold"], spec["range"])
        reg_x = to_model(reg, scale, offset)
        pair_loader = DataLoader(
            TensorDataset(rows, cols, targets),
            batch_size=spec["pairs"],
            shuffle=True,
            drop_last=True,
        )
    targets_seconds = time.perf_counter() - t0

    split = dict.fromkeys(
        ["data", "pairs", "forward", "backward", "optimizer", "evaluation"], 0.0
    )
    started = time.perf_counter()
    model.train()
    pairs = iter(pair_loader) if pair_loader is not None else None
    steps = 0
    batches = iter(train_loader)
    while True:
        clock = time.perf_counter()
        try:
            x, y = next(batches)
        except StopIteration:
            break
        now = time.perf_counter()
        split["data"] += now - clock
        clock = now
        if pairs is not None:
            try:
                i, j, t = next(pairs)
            except StopIteration:
                pairs = iter(pair_loader)
                i, j, t = next(pairs)
            a, b = reg_x[i], reg_x[j]
            now = time.perf_counter()
            split["pairs"] += now - clock
            clock = now
        loss = F.cross_entropy(model(x), y)
        if pairs is not None:
            loss = loss + alpha * ((g(model(a, b)) - g(t)) ** 2).mean()
        now = time.perf_counter()
        split["forward"] += now - clock
        clock = now
        opt.zero_grad()
        loss.backward()
        now = time.perf_counter()
        split["backward"] += now - clock
        clock = now
        opt.step()
        loss.item()
        now = time.perf_counter()
        split["optimizer"] += now - clock
        steps += 1
    clock = time.perf_counter()
    model.eval()
    for loader in eval_loaders:
        evaluate(model, loader)
    split["evaluation"] = time.perf_counter() - clock
    report = {
        "framework": f"pytorch {torch.__version__}",
        "threads": torch.get_num_threads(),
        "epoch_seconds": time.perf_counter() - started,
        "split_seconds": split,
        "targets_seconds": targets_seconds,
        "steps": steps,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
