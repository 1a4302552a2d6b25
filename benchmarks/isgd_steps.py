"""What an exact implicit step costs relative to an explicit one, measured side by side.

Each pair runs in the same process, interleaved, on the same data; the printed ratio is
ISGD time / ESGD time (median of repeats). Also: the book's training loop against a bare
hand-written torch loop on the same problem, to show what the shared loop costs.

    python -m ibtools bench isgd_steps
"""

from __future__ import annotations

import statistics
import time

import torch

from ibtools import isgd
from ibtools.train import train


def timed(fn, repeats: int = 7, number: int = 200) -> float:
    """Median seconds per call of ``fn`` over ``repeats`` batches of ``number`` calls."""
    fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        samples.append((time.perf_counter() - start) / number)
    return statistics.median(samples)


def step_pairs(device: torch.device) -> list[tuple[str, callable, callable]]:
    gen = torch.Generator().manual_seed(0)
    d, B, lr = 31, 100, 0.1
    theta = torch.randn(d, generator=gen).to(device)
    X, y = torch.randn(B, d, generator=gen).to(device), torch.randn(B, generator=gen).to(device)
    x1, y1 = X[0], torch.tensor(1.0, device=device)
    runs = torch.randn(1000, d, generator=gen).to(device)
    xs, ys = torch.randn(1000, d, generator=gen).to(device), torch.ones(1000, device=device)

    def esgd_ls():
        return theta - lr * X.T @ (X @ theta - y) / B

    def esgd_logistic(theta=theta, x=x1, y=y1):
        return theta + lr * y * torch.sigmoid(-y * (x @ theta)) * x

    def esgd_logistic_batched():
        return runs + lr * (ys * torch.sigmoid(-ys * (xs * runs).sum(-1)))[:, None] * xs

    return [
        ("least squares, mini-batch of 100 (SVD solve)", lambda: isgd.prox_least_squares(theta, X, y, lr), esgd_ls),
        ("logistic, one example (root of eq. 1.6)", lambda: isgd.prox_logistic(theta, x1, y1, lr), esgd_logistic),
        ("logistic, 1000 independent runs at once", lambda: isgd.prox_logistic(runs, xs, ys, lr), esgd_logistic_batched),
    ]


def loop_pair(device: torch.device):
    """The shared training loop vs a bare loop: linear least squares, batch 32, one epoch."""
    gen = torch.Generator().manual_seed(0)
    n, d = 4096, 32

    class Data:
        x_train = torch.randn(n, d, generator=gen)
        y_train = torch.randn(n, generator=gen)
        x_test, y_test = x_train[:256], y_train[:256]

    def ours():
        train(torch.nn.Linear(d, 1), Data, lambda m: torch.optim.SGD(m.parameters(), lr=0.01),
              loss="least_squares", epochs=1, batch_size=32, seed=0, device=device)

    def bare():
        torch.manual_seed(0)
        model = torch.nn.Linear(d, 1).to(device)
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        x, y = Data.x_train.to(device), Data.y_train.to(device)
        order = torch.randperm(n)
        for i in range(0, n, 32):
            idx = order[i:i + 32]
            opt.zero_grad()
            loss = 0.5 * (model(x[idx]).squeeze(-1) - y[idx]).pow(2).mean()
            loss.backward()
            opt.step()
            float(loss.detach())

    return ours, bare


def main(device: torch.device) -> None:
    print(f"device: {device}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{'update':<48} {'ISGD us':>9} {'ESGD us':>9} {'ratio':>7}")
    for name, implicit, explicit in step_pairs(device):
        t_i, t_e = timed(implicit), timed(explicit)
        print(f"{name:<48} {t_i * 1e6:9.1f} {t_e * 1e6:9.1f} {t_i / t_e:7.2f}")
    ours, bare = loop_pair(device)
    t_ours, t_bare = timed(ours, repeats=5, number=1), timed(bare, repeats=5, number=1)
    print(f"\n{'training loop, 128 steps + 2 evaluations':<48} {'ours ms':>9} {'bare ms':>9} {'ratio':>7}")
    print(f"{'':<48} {t_ours * 1e3:9.1f} {t_bare * 1e3:9.1f} {t_ours / t_bare:7.2f}")
