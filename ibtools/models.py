"""The networks of the source papers, as ordinary torch modules.

Initialisation follows Fagan & Iyengar, appendix D.4: weights uniform in
+-sqrt(6 / (fan_in + fan_out)) (Glorot), biases zero.
"""

from __future__ import annotations

import torch
from torch import nn

from .ib_layers import IBElmanRNN, IBLinear


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


def mnist_features() -> nn.Sequential:
    """The convolutional part of the MNIST classifier: two 5x5 convolutions (10 and 20
    filters), each with 2x2 max-pooling and relu; 1 x 28 x 28 images -> 320 features."""
    return nn.Sequential(nn.Conv2d(1, 10, 5), nn.MaxPool2d(2), nn.ReLU(),
                         nn.Conv2d(10, 20, 5), nn.MaxPool2d(2), nn.ReLU(), nn.Flatten())


class MNISTConvNet(nn.Module):
    """Fagan & Iyengar's MNIST classifier (appendix D.3), after PyTorch's MNIST example:
    :func:`mnist_features`, an arctan layer 320 -> 50, dropout, and a relu layer 50 -> 10
    whose outputs feed the softmax."""

    def __init__(self, dropout: float = 0.5):
        super().__init__()
        self.features = mnist_features()
        self.head = nn.Sequential(nn.Linear(320, 50), Arctan(), nn.Dropout(dropout), nn.Linear(50, 10), nn.ReLU())
        glorot_(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


# --- the same networks with implicit-backpropagation layers (Fagan & Iyengar, appendix D.3) ---
#
# ``mode="implicit"`` trains the fully connected layers by IB (ibtools.ib_layers) and
# ``mode="explicit"`` the same layers by ordinary backpropagation (EB); convolutions and
# read-outs without a closed-form IB update stay explicit in both.

class IBMNISTClassifier(nn.Module):
    """The MNIST classifier with IB on its arctan (320 -> 50) and relu (50 -> 10) layers and
    EB on the convolutions; dropout 0.5 between the two."""

    def __init__(self, mode: str = "implicit", dropout: float = 0.5):
        super().__init__()
        self.features = glorot_(mnist_features())
        self.head = nn.Sequential(IBLinear(320, 50, "arctan", mode), nn.Dropout(dropout),
                                  IBLinear(50, 10, "relu", mode))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


AUTOENCODER_SIZES = (784, 500, 300, 100, 30, 100, 300, 500, 784)


class IBAutoencoder(nn.Sequential):
    """The 784:500:300:100:30:100:300:500:784 autoencoder, a relu after every layer (the
    last included: pixels are in [0, 1])."""

    def __init__(self, mode: str = "implicit", sizes=AUTOENCODER_SIZES):
        super().__init__(nn.Flatten(), *[IBLinear(n, m, "relu", mode) for n, m in zip(sizes[:-1], sizes[1:])])


class MusicRNN(nn.Module):
    """The music model (after Pascanu et al. 2013, with arctan for tanh): a 300-unit Elman RNN,
    and a linear read-out (explicit) whose sigmoid gives each of the 88 notes' probability of
    sounding at the next time step. Input (T, B, 88) piano rolls; output (T, B, 88) logits,
    the prediction for step t + 1 made at step t."""

    def __init__(self, mode: str = "implicit", notes: int = 88, hidden: int = 300):
        super().__init__()
        self.rnn = IBElmanRNN(notes, hidden, "arctan", mode)
        self.readout = glorot_(nn.Linear(hidden, notes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.readout(self.rnn(x))


UCI_INITS = ("glorot", "authors")


class UCINet(nn.Sequential):
    """The UCI classifier (appendix D.3): three arctan layers as wide as the input, then a
    linear layer to the classes (IB's update for the identity is EB's, so only the arctan
    layers differ). Input (B, n_features), output (B, n_classes) logits.

    ``init="glorot"``: appendix D.4, Glorot-uniform weights and zero biases. ``init="authors"``:
    what Fagan & Iyengar's code does instead (github.com/francoisfagan/NN_ISGD, isgd_fns.py,
    the arctan layer's ``reset_parameters``: weights and biases uniform on (-0.1, 0.1); the
    last layer is a torch ``nn.Linear`` with torch's default initialisation, uniform on
    (-1/sqrt(n), 1/sqrt(n)) for weights and bias). Another ``init`` raises ValueError."""

    def __init__(self, n_features: int, n_classes: int, mode: str = "implicit", init: str = "glorot"):
        if init not in UCI_INITS:
            raise ValueError(f"unknown UCI initialisation {init!r}; use 'glorot' (appendix D.4) or "
                             "'authors' (Fagan & Iyengar's code)")
        super().__init__(*[IBLinear(n_features, n_features, "arctan", mode) for _ in range(3)],
                         IBLinear(n_features, n_classes, "identity", mode))
        if init == "authors":
            with torch.no_grad():
                for layer in list(self)[:3]:
                    layer.weight.uniform_(-0.1, 0.1)
                    layer.bias.uniform_(-0.1, 0.1)
                nn.Linear.reset_parameters(self[3])


def linear_model(n_features: int, n_outputs: int = 1) -> nn.Linear:
    """A linear (generalised linear) model; zero-initialised so every method starts alike."""
    model = nn.Linear(n_features, n_outputs)
    nn.init.zeros_(model.weight)
    nn.init.zeros_(model.bias)
    return model


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with batch normalisation and relu, added to the input (He et al.
    2016); where the block halves the resolution and doubles the channels the shortcut
    subsamples and pads with zero channels (their option A for CIFAR, no parameters)."""

    def __init__(self, channels_in: int, channels_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels_in, channels_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels_out)
        self.conv2 = nn.Conv2d(channels_out, channels_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels_out)
        self.stride, self.extra = stride, channels_out - channels_in

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1 and self.extra == 0:
            return x
        x = x[:, :, ::self.stride, ::self.stride]
        return nn.functional.pad(x, (0, 0, 0, 0, self.extra // 2, self.extra - self.extra // 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class CIFARResNet(nn.Module):
    """The CIFAR ResNet of He et al. (2016), section 4.2: a 3x3 convolution, three stages of
    ``n`` basic blocks at ``width``, 2 ``width`` and 4 ``width`` channels (the last two
    halving the resolution), global average pooling and a linear layer; depth 6n + 2
    (ResNet-56: n = 9). Kaiming initialisation, batch normalisation, no dropout (VS A.3.1)."""

    def __init__(self, depth: int = 56, classes: int = 10, in_channels: int = 3, width: int = 16):
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(f"a CIFAR ResNet has depth 6n + 2 (8, 14, 20, 32, 44, 56, 110, ...), got {depth}")
        n = (depth - 2) // 6
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
                                  nn.ReLU())
        blocks, channels = [], width
        for stage, out in enumerate((width, 2 * width, 4 * width)):
            for i in range(n):
                blocks.append(BasicBlock(channels, out, stride=2 if stage > 0 and i == 0 else 1))
                channels = out
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(channels, classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.Linear):
                nn.init.kaiming_normal_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.blocks(self.stem(x))
        return self.head(features.mean(dim=(2, 3)))
