"""The networks of the source papers, as ordinary torch modules.

Initialisation follows Fagan & Iyengar, appendix D.4: weights uniform in
+-sqrt(6 / (fan_in + fan_out)) (Glorot), biases zero.
"""

from __future__ import annotations

import torch
from torch import nn


class Arctan(nn.Module):
    """Element-wise arctan, the bounded activation implicit backpropagation handles in closed form."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.atan(x)


ACTIVATIONS = {"relu": nn.ReLU, "arctan": Arctan, "identity": nn.Identity, "tanh": nn.Tanh}


def glorot_(module: nn.Module) -> nn.Module:
    """Paper initialisation for every Linear/Conv layer inside ``module``."""
    for layer in module.modules():
        if isinstance(layer, (nn.Linear, nn.Conv2d)):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)
    return module


def activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


class MLP(nn.Module):
    """Fully connected layers ``sizes[0] -> ... -> sizes[-1]``, each followed by its activation.

    ``activations`` has one name per layer; the inputs are flattened first, so images work."""

    def __init__(self, sizes: list[int], activations: list[str]):
        super().__init__()
        if len(activations) != len(sizes) - 1:
            raise ValueError(f"{len(sizes) - 1} layers need {len(sizes) - 1} activations, got {len(activations)}")
        layers: list[nn.Module] = [nn.Flatten()]
        for fan_in, fan_out, act in zip(sizes[:-1], sizes[1:], activations):
            layers += [nn.Linear(fan_in, fan_out), activation(act)]
        self.net = glorot_(nn.Sequential(*layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class MNISTConvNet(nn.Module):
    """Fagan & Iyengar's MNIST classifier (appendix D.3), after PyTorch's MNIST example:
    two 5x5 convolutions (10 and 20 filters) with relu and 2x2 max-pooling, an arctan layer
    320 -> 50, dropout, and a relu layer 50 -> 10 whose outputs feed the softmax."""

    def __init__(self, dropout: float = 0.5):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 10, 5), nn.MaxPool2d(2), nn.ReLU(),
            nn.Conv2d(10, 20, 5), nn.MaxPool2d(2), nn.ReLU(), nn.Flatten(),
        )
        self.head = nn.Sequential(nn.Linear(320, 50), Arctan(), nn.Dropout(dropout), nn.Linear(50, 10), nn.ReLU())
        glorot_(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def linear_model(n_features: int, n_outputs: int = 1) -> nn.Linear:
    """A linear (generalised linear) model; zero-initialised so every method starts alike."""
    model = nn.Linear(n_features, n_outputs)
    nn.init.zeros_(model.weight)
    nn.init.zeros_(model.bias)
    return model
