"""PyTorch twin of `mnist bench`: the same workload, measured the same way.

One of the project's models (the notebook's CNN, seed-plus, or the HVC
network), its recipe's optimizer, label smoothing and weight average, one
fixed batch of seeded random images; warm-up steps, then timed steps, the loss
read every step (as `mnist train` does); then inference batches under
`torch.no_grad()`. Prints one JSON object, which `mnist bench --python PATH`
reads to report PyTorch beside each Rust backend, as a ratio. `mnist bench`
passes every flag, so the workload is defined once, in Rust.

Usage: python bench/torch_bench.py [--model seed|seed-plus|hvc|kaggle] [--batch-size 600]
       [--optimizer radam|adam|adamw] [--lr 1e-3] [--weight-decay 1e-4]
       [--label-smoothing 0] [--ema 0] [--epochs 5] [--warmup 3] [--steps 20]
       [--eval-batches 10] [--threads 2] [--device cpu|cuda:N|mps]
"""
import argparse
import json
import math
import time

import torch
import torch.nn as nn
import torch.optim as optim
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn


class CNN(nn.Module):
    """The seed notebook's network, as written there."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, kernel_size=5, stride=1, padding=2)
        self.conv2 = nn.Conv2d(16, 32, kernel_size=5, stride=1, padding=2)
        self.fc1 = nn.Linear(32 * 7 * 7, 100)
        self.fc2 = nn.Linear(100, 10)
        self.pool = nn.MaxPool2d(kernel_size=2, stride=2, padding=0)
        self.relu = nn.ReLU()

    def forward(self, x):
        x = self.relu(self.pool(self.conv1(x)))
        x = self.relu(self.pool(self.conv2(x)))
        x = x.view(-1, 32 * 7 * 7)
        x = self.relu(self.fc1(x))
        return self.fc2(x)


class SeedPlus(CNN):
    """seed-plus: batch norm after each convolution, dropout before fc2."""

    def __init__(self):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(16)
        self.bn2 = nn.BatchNorm2d(32)
        self.drop = nn.Dropout(0.3)

    def forward(self, x):
        x = self.relu(self.pool(self.bn1(self.conv1(x))))
        x = self.relu(self.pool(self.bn2(self.conv2(x))))
        x = x.flatten(1)
        x = self.relu(self.fc1(x))
        return self.fc2(self.drop(x))


class CapsuleBranch(nn.Module):
    """Each position's channel vector is a capsule; class capsule j is
    sum_i W_ji * u_i (element-wise), batch-normalised, summed to a score."""

    def __init__(self, positions, dims, classes=10):
        super().__init__()
        bound = 1 / math.sqrt(positions)
        self.weight = nn.Parameter(torch.empty(classes, positions, dims).uniform_(-bound, bound))
        self.bn = nn.BatchNorm1d(classes)

    def forward(self, features):
        u = features.flatten(2)  # [batch, dims, positions]
        class_capsules = torch.einsum("bdp,cpd->bcd", u, self.weight)
        return self.bn(class_capsules).sum(2)


class HVC(nn.Module):
    """Byerly et al.'s homogeneous vector capsules, as crates/model/src/hvc.rs."""

    def __init__(self, channels=(32, 48, 64, 80, 96, 112, 128, 144, 160), taps=(3, 6, 9)):
        super().__init__()
        blocks, branches = [], []
        cin, side = 1, 28
        for i, cout in enumerate(channels):
            blocks.append(nn.Sequential(
                nn.Conv2d(cin, cout, 3, bias=False), nn.BatchNorm2d(cout), nn.ReLU()))
            cin, side = cout, side - 2
            if i + 1 in taps:
                branches.append(CapsuleBranch(side * side, cout))
        self.convs = nn.ModuleList(blocks)
        self.branches = nn.ModuleList(branches)
        self.taps = [t - 1 for t in taps]

    def forward(self, x):
        scores, branches = 0, iter(self.branches)
        for i, block in enumerate(self.convs):
            x = block(x)
            if i in self.taps:
                scores = scores + next(branches)(x)
        return scores


class KaggleCNN(nn.Module):
    """Seven conv -> BN -> ReLU blocks, as crates/model/src/kaggle_cnn.rs."""

    LAYERS = [  # (kernel, stride, padding, width multiple, dropout after)
        (3, 1, 0, 1, False), (3, 1, 0, 1, False), (5, 2, 2, 1, True),
        (3, 1, 0, 2, False), (3, 1, 0, 2, False), (5, 2, 2, 2, True),
        (4, 1, 0, 4, True),
    ]

    def __init__(self, width=32, p=0.4):
        super().__init__()
        blocks, cin = [], 1
        for kernel, stride, padding, widths, _ in self.LAYERS:
            cout = widths * width
            blocks.append(nn.Sequential(
                nn.Conv2d(cin, cout, kernel, stride, padding, bias=False),
                nn.BatchNorm2d(cout), nn.ReLU()))
            cin = cout
        self.convs = nn.ModuleList(blocks)
        self.drop = nn.Dropout(p)
        self.fc = nn.Linear(cin, 10)

    def forward(self, x):
        for block, (*_, drop) in zip(self.convs, self.LAYERS):
            x = block(x)
            if drop:
                x = self.drop(x)
        return self.fc(x.flatten(1))


MODELS = {"seed": CNN, "seed-plus": SeedPlus, "hvc": HVC, "kaggle": KaggleCNN}


def make_optimizer(name, params, lr, weight_decay):
    if name == "radam":
        return optim.RAdam(params, lr=lr, weight_decay=weight_decay, decoupled_weight_decay=True)
    if name == "adam":
        return optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    raise SystemExit(f"unknown optimizer {name}")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", choices=sorted(MODELS), default="seed")
    p.add_argument("--batch-size", type=int, default=600)
    p.add_argument("--optimizer", default="radam")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--label-smoothing", type=float, default=0.0)
    p.add_argument("--ema", type=float, default=0.0)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--eval-batches", type=int, default=10)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    device = torch.device(a.device)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    model = MODELS[a.model]().to(device)
    criterion = nn.CrossEntropyLoss(label_smoothing=a.label_smoothing)
    optimizer = make_optimizer(a.optimizer, model.parameters(), a.lr, a.weight_decay)
    ema = None
    if a.ema > 0:
        ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(a.ema), use_buffers=True)
    images = (torch.rand(a.batch_size, 1, 28, 28) * 3.2 - 0.42).to(device)
    labels = torch.randint(0, 10, (a.batch_size,)).to(device)

    model.train()
    for step in range(a.warmup + a.steps):
        if step == a.warmup:
            sync()
            started = time.perf_counter()
        loss = criterion(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if ema is not None:
            ema.update_parameters(model)
        loss.item()
    ms_per_step = (time.perf_counter() - started) * 1e3 / a.steps

    model.eval()
    with torch.no_grad():
        model(images).argmax(1).cpu()
        started = time.perf_counter()
        for _ in range(a.eval_batches):
            model(images).argmax(1).cpu()
        inference = a.eval_batches * a.batch_size / (time.perf_counter() - started)

    epoch_s = ms_per_step * math.ceil(60000 / a.batch_size) / 1e3
    print(json.dumps({
        "backend": f"pytorch {torch.__version__}",
        "model": a.model,
        "batch_size": a.batch_size,
        "steps": a.steps,
        "threads": a.threads,
        "device": a.device,
        "parameters": sum(p.numel() for p in model.parameters()),
        "ms_per_step": ms_per_step,
        "epoch_s": epoch_s,
        "projected_run_s": epoch_s * a.epochs,
        "train_images_per_s": a.batch_size * 1e3 / ms_per_step,
        "inference_images_per_s": inference,
    }))


if __name__ == "__main__":
    main()
