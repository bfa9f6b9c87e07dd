"""A one-stage detector's head in miniature: the output concatenates box coordinates in pixels with class scores.

Real detectors (SSD, YOLO, RetinaNet exports) end in exactly this concat, and it is where per-tensor int8 goes
wrong: the boxes span 0..~320 pixels, the scores 0..1 from a sigmoid whose int8 output parameters are fixed at
1/256 and -128. If the concat shares the sigmoid's fixed parameters every box coordinate is clamped below 1
(issue 15: 0.05 dB SQNR); passes/quantize_int8.py requantizes the scores to the concat's parameters instead.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from .zoo import _seeded, conv_bn

BOX_PIXELS = 320.0  # the largest box coordinate on the standard-normal inputs the tests and the benchmark use


class DetectionHead(nn.Module):
    """A small conv backbone, then two 1x1 branches: 4 box coordinates (ReLU, weights scaled so boxes reach about
    BOX_PIXELS) and 3 class scores (sigmoid), concatenated along channels and flattened per anchor: [N, 7, H*W].
    With concat=False it returns the two branches instead (the tests' "each branch quantized alone")."""

    def __init__(self, concat: bool = True):
        super().__init__()
        self.concat = concat
        self.backbone = nn.Sequential(conv_bn(3, 16, 3, 2), conv_bn(16, 32, 3, 2))
        self.boxes = nn.Conv2d(32, 4, 1)
        self.scores = nn.Conv2d(32, 3, 1)

    def forward(self, x):
        f = self.backbone(x)
        boxes = torch.relu(self.boxes(f))
        scores = torch.sigmoid(self.scores(f))
        return torch.flatten(torch.cat([boxes, scores], 1), 2) if self.concat else (boxes, scores)


def detection_head(concat: bool = True):
    """DetectionHead on a 1x3x32x32 input; the box branch is scaled so its largest output on seeded standard-normal
    inputs is BOX_PIXELS."""
    model, example = _seeded(lambda: DetectionHead(concat), (1, 3, 32, 32))
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(1)
        peak = torch.relu(model.boxes(model.backbone(torch.randn(64, 3, 32, 32)))).max()
        model.boxes.weight *= BOX_PIXELS / peak
        model.boxes.bias *= BOX_PIXELS / peak
    return model, example
