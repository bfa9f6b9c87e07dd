"""Small, deterministic versions of the CNN families mcc compiles, for tests, examples and benchmarks.

torchvision's builders (resnet18, mobilenet_v2, mobilenet_v3_small) are the shapes imitated here; mcc's
versions keep each family's structure (projection shortcuts, inverted residuals with ReLU6 and depthwise convs,
hardswish and squeeze-excite) at a width and input size that compile and run in a second, and downloads nothing.
Each builder returns (model in eval mode, example input). Weights come from a fixed seed, and every BatchNorm
gets non-trivial affine parameters and running statistics measured in train mode on random data, so that
BatchNorm folding changes real numbers. `digits_classifier` is the one model with meaning: a small CNN trained
on scikit-learn's bundled 8x8 digits, for accuracy checks after compression.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

SEED = 0


def conv_bn(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, act: type | None = nn.ReLU):
    """Conv (no bias) + BatchNorm + optional activation, the unit every family here is built from."""
    layers = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    return nn.Sequential(*layers, *([act()] if act else []))


def _seeded(build, input_shape):
    """Build under a fixed seed without touching the caller's RNG; calibrate BatchNorms; return (model, x)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        model = build()
        calibrate_batchnorm(model, [torch.randn(8, *input_shape[1:]) for _ in range(4)])
        example = torch.randn(input_shape)
    return model.eval(), example


def calibrate_batchnorm(model: nn.Module, batches) -> None:
    """Give every BatchNorm random affine parameters and running statistics averaged over `batches` (train mode)."""
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for bn in bns:
        nn.init.uniform_(bn.weight, 0.5, 1.5)
        nn.init.uniform_(bn.bias, -0.2, 0.2)
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average: the statistics of exactly these batches
    model.train()
    with torch.no_grad():
        for x in batches:
            model(x)
    for bn in bns:
        bn.momentum = 0.1
    model.eval()


# ---- ResNet-18 style ------------------------------------------------------------------------------------
class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(conv_bn(cin, cout, 3, stride), conv_bn(cout, cout, 3, act=None))
        self.shortcut = conv_bn(cin, cout, 1, stride, act=None) if stride != 1 or cin != cout else nn.Identity()

    def forward(self, x):
        return F.relu(self.body(x) + self.shortcut(x))


class ResNet18Style(nn.Module):
    def __init__(self, widths=(8, 16, 32, 64), num_classes: int = 10, in_channels: int = 3):
        super().__init__()
        self.stem = conv_bn(in_channels, widths[0], 3)
        blocks, cin = [], widths[0]
        for i, w in enumerate(widths):
            for j in range(2):
                blocks.append(BasicBlock(cin, w, 2 if i > 0 and j == 0 else 1))
                cin = w
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        x = self.blocks(self.stem(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def resnet18_style():
    """BasicBlock x [2, 2, 2, 2], widths 8..64, projection shortcuts; input 1x3x32x32, 10 logits."""
    return _seeded(ResNet18Style, (1, 3, 32, 32))


# ---- MobileNetV2 style ----------------------------------------------------------------------------------
class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int):
        super().__init__()
        hidden = cin * expand
        layers = [conv_bn(cin, hidden, 1, act=nn.ReLU6)] if expand != 1 else []
        layers += [conv_bn(hidden, hidden, 3, stride, groups=hidden, act=nn.ReLU6), conv_bn(hidden, cout, 1, act=None)]
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        return x + self.body(x) if self.residual else self.body(x)


class MobileNetV2Style(nn.Module):
    # (expansion, output channels, repeats, first stride), as in the MobileNetV2 paper's table, narrowed
    SETTINGS = ((1, 8, 1, 1), (6, 12, 2, 2), (6, 16, 2, 2), (6, 24, 2, 1))

    def __init__(self, num_classes: int = 10):
        super().__init__()
        layers, cin = [conv_bn(3, 16, 3, 2, act=nn.ReLU6)], 16
        for t, c, n, s in self.SETTINGS:
            for i in range(n):
                layers.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        layers.append(conv_bn(cin, 64, 1, act=nn.ReLU6))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(64, num_classes))

    def forward(self, x):
        return self.classifier(self.features(x).mean((2, 3)))


def mobilenet_v2_style():
    """Inverted residuals with ReLU6 and depthwise 3x3 convs, three stride-2 stages; input 1x3x32x32."""
    return _seeded(MobileNetV2Style, (1, 3, 32, 32))


# ---- MobileNetV3-Small style ----------------------------------------------------------------------------
class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, squeeze: int):
        super().__init__()
        self.reduce = nn.Conv2d(channels, squeeze, 1)
        self.expand = nn.Conv2d(squeeze, channels, 1)

    def forward(self, x):
        s = self.expand(F.relu(self.reduce(x.mean((2, 3), keepdim=True))))
        return x * F.hardsigmoid(s)


class V3Block(nn.Module):
    def __init__(self, cin: int, hidden: int, cout: int, k: int, stride: int, se: bool, act: type):
        super().__init__()
        layers = [conv_bn(cin, hidden, 1, act=act)] if hidden != cin else []
        layers.append(conv_bn(hidden, hidden, k, stride, groups=hidden, act=act))
        if se:
            layers.append(SqueezeExcite(hidden, max(8, hidden // 4)))
        layers.append(conv_bn(hidden, cout, 1, act=None))
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        return x + self.body(x) if self.residual else self.body(x)


class MobileNetV3SmallStyle(nn.Module):
    # (input, hidden, output channels, kernel, stride, squeeze-excite, activation)
    SETTINGS = ((16, 16, 16, 3, 2, True, nn.ReLU), (16, 36, 24, 3, 2, False, nn.ReLU),
                (24, 44, 24, 3, 1, False, nn.ReLU), (24, 48, 40, 5, 2, True, nn.Hardswish),
                (40, 60, 40, 5, 1, True, nn.Hardswish))

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(conv_bn(3, 16, 3, 2, act=nn.Hardswish), *(V3Block(*s) for s in self.SETTINGS),
                                      conv_bn(40, 96, 1, act=nn.Hardswish))
        self.classifier = nn.Sequential(nn.Linear(96, 64), nn.Hardswish(), nn.Dropout(0.2), nn.Linear(64, num_classes))

    def forward(self, x):
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(self.features(x), 1), 1))


def mobilenet_v3_small_style():
    """Hardswish, 5x5 depthwise convs and squeeze-excite (mean, 1x1 convs, hardsigmoid, mul); input 1x3x32x32."""
    return _seeded(MobileNetV3SmallStyle, (1, 3, 32, 32))


# ---- digits: a trained model ----------------------------------------------------------------------------
@dataclass
class DigitsSplit:
    """scikit-learn's 1797 8x8 digits as N x 1 x 8 x 8 float32 in [0, 1] and int64 labels, split 75/25."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


def digits_split() -> DigitsSplit:
    """The fixed, stratified train/test split that digits_classifier trains on and tests measure accuracy on."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None]
    parts = train_test_split(x, digits.target, test_size=0.25, random_state=SEED, stratify=digits.target)
    xtr, xte, ytr, yte = (torch.from_numpy(np.ascontiguousarray(p)) for p in parts)
    return DigitsSplit(xtr, ytr.long(), xte, yte.long())


class DigitsNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(conv_bn(1, 8, 3), nn.MaxPool2d(2), conv_bn(8, 16, 3))
        self.fc = nn.Linear(16 * 4 * 4, 10)

    def forward(self, x):
        return self.fc(torch.flatten(self.features(x), 1))


def digits_classifier(train: bool = True, epochs: int = 6):
    """A small CNN on 8x8 digits; returns (model, one test image of shape 1x1x8x8).

    With train=True it is trained with Adam for `epochs` passes over digits_split().x_train (under a second;
    about 98% test accuracy) and its BatchNorms keep the statistics of training; with train=False it keeps its
    seeded initial weights and its BatchNorms are calibrated on the training images. Measure accuracy with
    `(model(split.x_test).argmax(1) == split.y_test).float().mean()` for `split = digits_split()`.
    """
    split = digits_split()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        model = DigitsNet()
        if train:
            _train(model, split, epochs)
        else:
            calibrate_batchnorm(model, split.x_train.split(64))
    return model.eval(), split.x_test[:1].clone()


DIGITS_RESNET_SIZE = 16  # the digits' 8x8 upsampled, so that a ResNet's four stages have pixels to stride over


def digits_upsampled_split(size: int = DIGITS_RESNET_SIZE) -> DigitsSplit:
    """digits_split() with each pixel repeated into a (size / 8)-pixel square."""
    split = digits_split()
    k = size // 8
    up = [torch.from_numpy(np.ascontiguousarray(x.numpy().repeat(k, axis=2).repeat(k, axis=3)))
          for x in (split.x_train, split.x_test)]
    return DigitsSplit(up[0], split.y_train, up[1], split.y_test)


def digits_resnet(train: bool = True, epochs: int = 6):
    """ResNet18Style (widths 8..64, one input channel) trained on digits upsampled to 16x16 (digits_upsampled_split;
    a few seconds, about 97-98% test accuracy): the residual net that pruning, low-rank and depthwise replacement
    are measured on with real accuracy. Returns (model, one test image of shape 1x1x16x16)."""
    split = digits_upsampled_split()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        model = ResNet18Style(in_channels=1)
        if train:
            _train(model, split, epochs)
        else:
            calibrate_batchnorm(model, split.x_train.split(64))
    return model.eval(), split.x_test[:1].clone()


def _train(model: nn.Module, split: DigitsSplit, epochs: int) -> None:
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    order = torch.Generator().manual_seed(SEED)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(split.x_train), generator=order).split(64):
            opt.zero_grad()
            F.cross_entropy(model(split.x_train[idx]), split.y_train[idx]).backward()
            opt.step()


ZOO = {f.__name__: f for f in (resnet18_style, mobilenet_v2_style, mobilenet_v3_small_style, digits_classifier)}
