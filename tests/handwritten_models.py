"""Models mcc's users have that no public definition suite here covers, written the way their authors write them.

pytorchcv covers classification CNNs; these cover the rest of issue 14's list: a torchvision-style head
(adaptive pooling then torch.flatten), a YOLO-style detection head (box coordinates in pixels concatenated with
sigmoid class scores), an FPN/U-Net decoder (transposed convs, resizes, skip concatenations), conv + GRU and
conv + LSTM audio models, and a small BERT encoder from `transformers`' own BertModel with random weights.

Each builder returns (module in eval mode, example input); weights are seeded so every run sees the same
model. tests/test_handwritten_models.py and benchmarks/coverage.py both read MODELS.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _conv_bn(cin, cout, stride=1, groups=1, act=nn.ReLU):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, groups=groups, bias=False), nn.BatchNorm2d(cout),
                         act(inplace=True))


def _randomize_bn(module: nn.Module) -> nn.Module:
    """Give every batch norm non-trivial statistics, as trained weights have (fresh ones are the identity)."""
    g = torch.Generator().manual_seed(1)
    for m in module.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=g) * 0.5 + 0.75)
            m.weight.data.copy_(torch.rand(n, generator=g) * 0.5 + 0.75)
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.1)
    return module.eval()


class TorchvisionStyle(nn.Module):
    """The head of torchvision's and timm's CNNs: F.adaptive_avg_pool2d(x, 1), torch.flatten(x, 1), Linear;
    with a residual block, an in-place ReLU and a squeeze-excite gate on the way."""

    def __init__(self, classes=10):
        super().__init__()
        self.stem = _conv_bn(3, 16, 2)
        self.block = nn.Sequential(_conv_bn(16, 16), nn.Conv2d(16, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16))
        self.se_reduce, self.se_expand = nn.Conv2d(16, 4, 1), nn.Conv2d(4, 16, 1)
        self.fc = nn.Linear(16, classes)

    def forward(self, x):
        x = self.stem(x)
        x = F.relu(x + self.block(x), inplace=True)
        gate = F.adaptive_avg_pool2d(x, 1)
        x = x * torch.sigmoid(self.se_expand(F.relu(self.se_reduce(gate))))
        x = F.adaptive_avg_pool2d(x, 1)
        return self.fc(torch.flatten(x, 1))


class YoloStyleHead(nn.Module):
    """A one-stage detector's output: per anchor, box centre and size in input pixels and sigmoid class scores,
    concatenated on the last axis (the tensor that issue 15's int8 collapse was found on)."""

    def __init__(self, classes=4, anchors=((10.0, 14.0), (23.0, 27.0))):
        super().__init__()
        self.classes, self.na = classes, len(anchors)
        self.backbone = nn.Sequential(_conv_bn(3, 16, 2, act=nn.SiLU), _conv_bn(16, 32, 2, act=nn.SiLU),
                                      _conv_bn(32, 32, 2, act=nn.SiLU))
        self.head = nn.Conv2d(32, self.na * (5 + classes), 1)
        self.register_buffer("anchor_wh", torch.tensor(anchors).view(1, self.na, 1, 1, 2))
        self.stride = 8.0

    def forward(self, x):
        p = self.head(self.backbone(x))
        n, _, h, w = p.shape
        p = p.view(n, self.na, 5 + self.classes, h, w).permute(0, 1, 3, 4, 2)
        ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32),
                                indexing="ij")
        grid = torch.stack((xs, ys), -1).view(1, 1, h, w, 2)
        xy = (torch.sigmoid(p[..., :2]) * 2 - 0.5 + grid) * self.stride
        wh = (torch.sigmoid(p[..., 2:4]) * 2) ** 2 * self.anchor_wh
        scores = torch.sigmoid(p[..., 4:])
        return torch.cat((xy, wh, scores), -1).view(n, -1, 5 + self.classes)


class UNetDecoder(nn.Module):
    """An FPN/U-Net segmenter: strided encoder, decoder with ConvTranspose2d and bilinear/nearest resizes,
    skip connections by concatenation and by addition (FPN lateral), per-pixel class logits."""

    def __init__(self, classes=3):
        super().__init__()
        self.enc1, self.enc2, self.enc3 = _conv_bn(3, 8), _conv_bn(8, 16, 2), _conv_bn(16, 32, 2)
        self.up3 = nn.ConvTranspose2d(32, 16, 2, stride=2)
        self.dec2 = _conv_bn(32, 16)
        self.lateral = nn.Conv2d(8, 16, 1)
        self.dec1 = _conv_bn(16, 8)
        self.out = nn.Conv2d(8, classes, 1)

    def forward(self, x):
        e1 = self.enc1(x)
        e2 = self.enc2(e1)
        e3 = self.enc3(e2)
        d2 = self.dec2(torch.cat((self.up3(e3), e2), 1))
        d1 = F.interpolate(d2, scale_factor=2, mode="bilinear", align_corners=False) + self.lateral(e1)
        d1 = self.dec1(d1)
        coarse = F.interpolate(self.out(d1[:, :, ::2, ::2]), scale_factor=2, mode="nearest")
        return self.out(d1) + coarse


class AudioRecurrent(nn.Module):
    """Keyword spotting on a log-mel spectrogram [N, 1, mels, frames]: conv front end, frames as a sequence
    into a GRU or LSTM, per-utterance logits from the last step."""

    def __init__(self, cell="gru", mels=40, classes=12, hidden=32):
        super().__init__()
        self.front = nn.Sequential(_conv_bn(1, 8, (2, 1)), _conv_bn(8, 8, (2, 1)))
        rnn = nn.GRU if cell == "gru" else nn.LSTM
        self.rnn = rnn(8 * (mels // 4), hidden, batch_first=True)
        self.fc = nn.Linear(hidden, classes)

    def forward(self, x):
        f = self.front(x)                                  # [N, C, mels/4, T]
        n, c, m, t = f.shape
        seq = f.permute(0, 3, 1, 2).reshape(n, t, c * m)   # [N, T, features]
        out, _ = self.rnn(seq)
        return self.fc(out[:, -1])


class BertEncoder(nn.Module):
    """transformers' BertModel (a small config, random weights): token ids in, last hidden state out."""

    def __init__(self):
        super().__init__()
        from transformers import BertConfig, BertModel
        config = BertConfig(vocab_size=128, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                            intermediate_size=64, max_position_embeddings=32, attn_implementation="eager")
        self.bert = BertModel(config, add_pooling_layer=False)

    def forward(self, input_ids):
        return self.bert(input_ids=input_ids).last_hidden_state


def _build(cls, example, *args, **kwargs):
    def builder():
        torch.manual_seed(0)
        module = _randomize_bn(cls(*args, **kwargs))
        return module, example()
    return builder


def _image(c=3, h=64, w=64):
    return lambda: torch.randn(1, c, h, w, generator=torch.Generator().manual_seed(2))


MODELS = {
    "torchvision_style_head": _build(TorchvisionStyle, _image()),
    "yolo_style_head": _build(YoloStyleHead, _image()),
    "unet_fpn_decoder": _build(UNetDecoder, _image(h=32, w=32)),
    "audio_conv_gru": _build(AudioRecurrent, _image(1, 40, 32), "gru"),
    "audio_conv_lstm": _build(AudioRecurrent, _image(1, 40, 32), "lstm"),
    "bert_tiny": _build(BertEncoder, lambda: torch.randint(0, 128, (1, 16), generator=torch.Generator().manual_seed(2))),
}
