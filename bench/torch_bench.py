"""PyTorch twin of `mnist bench`: the same workload, measured the same way.

The notebook's CNN, RAdam(decoupled_weight_decay=True), cross-entropy, one
fixed batch of seeded random images; warm-up steps, then timed steps, the loss
read every step (as `mnist train` does); then inference batches under
`torch.no_grad()`. Prints one JSON object, which `mnist bench --python PATH`
reads to report PyTorch beside each Rust backend, as a ratio.

Usage: python bench/torch_bench.py [--batch-size 600] [--warmup 3] [--steps 20]
       [--eval-batches 10] [--threads 2]
"""
import argparse
import json
import time

import torch
import torch.nn as nn
import torch.optim as optim


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


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--batch-size", type=int, default=600)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--eval-batches", type=int, default=10)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)

    model = CNN()
    criterion = nn.CrossEntropyLoss()
    optimizer = optim.RAdam(model.parameters(), lr=1e-3, weight_decay=1e-4, decoupled_weight_decay=True)
    images = torch.rand(a.batch_size, 1, 28, 28) * 3.2 - 0.42
    labels = torch.randint(0, 10, (a.batch_size,))

    for step in range(a.warmup + a.steps):
        if step == a.warmup:
            started = time.perf_counter()
        loss = criterion(model(images), labels)
        loss.item()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    ms_per_step = (time.perf_counter() - started) * 1e3 / a.steps

    model.eval()
    with torch.no_grad():
        model(images).argmax(1)
        started = time.perf_counter()
        for _ in range(a.eval_batches):
            model(images).argmax(1)
        inference = a.eval_batches * a.batch_size / (time.perf_counter() - started)

    print(json.dumps({
        "backend": f"pytorch {torch.__version__}",
        "batch_size": a.batch_size,
        "steps": a.steps,
        "threads": a.threads,
        "ms_per_step": ms_per_step,
        "projected_5_epochs_s": ms_per_step * 500 / 1e3,
        "train_images_per_s": a.batch_size * 1e3 / ms_per_step,
        "inference_images_per_s": inference,
    }))


if __name__ == "__main__":
    main()
