"""PyTorch mirror of Wav2Lip's generator (Rudrabha/Wav2Lip models/wav2lip.py, models/conv.py), for
the parity tests and benchmarks/wav2lip.py only.

Module nesting and attribute names follow the reference, so the state_dict keys are the
reference's (e.g. 'face_encoder_blocks.1.0.conv_block.0.weight', 'output_block.1.bias') and a
real wav2lip.pth loads into `TorchWav2Lip` after its 'module.' prefix is stripped. The layer list
is written out by hand from the reference source, independently of metatalk_jax's spec tables,
so the tests compare two separate transcriptions.
"""

from __future__ import annotations

import torch
from torch import nn


class ConvBNReLU(nn.Module):
    """The reference's conv.Conv2d: conv_block = Sequential(Conv2d, BatchNorm2d); act = ReLU;
    the residual input is added after BN, before the ReLU."""

    def __init__(self, cin, cout, kernel_size, stride, padding, residual=False):
        super().__init__()
        self.conv_block = nn.Sequential(nn.Conv2d(cin, cout, kernel_size, stride, padding),
                                        nn.BatchNorm2d(cout))
        self.act = nn.ReLU()
        self.residual = residual

    def forward(self, x):
        y = self.conv_block(x)
        if self.residual:
            y = y + x
        return self.act(y)


class ConvTransposeBNReLU(nn.Module):
    """The reference's conv.Conv2dTranspose: Sequential(ConvTranspose2d, BatchNorm2d), ReLU."""

    def __init__(self, cin, cout, kernel_size, stride, padding, output_padding=0):
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.ConvTranspose2d(cin, cout, kernel_size, stride, padding, output_padding),
            nn.BatchNorm2d(cout))
        self.act = nn.ReLU()

    def forward(self, x):
        return self.act(self.conv_block(x))


def _res(c):
    return ConvBNReLU(c, c, 3, 1, 1, residual=True)


class TorchWav2Lip(nn.Module):
    """forward(audio [B,1,80,16], face [B,6,96,96]) -> [B,3,96,96] in [0,1] (4-D inputs only)."""

    def __init__(self):
        super().__init__()
        C, S = ConvBNReLU, nn.Sequential
        self.face_encoder_blocks = nn.ModuleList([
            S(C(6, 16, 7, 1, 3)),
            S(C(16, 32, 3, 2, 1), _res(32), _res(32)),
            S(C(32, 64, 3, 2, 1), _res(64), _res(64), _res(64)),
            S(C(64, 128, 3, 2, 1), _res(128), _res(128)),
            S(C(128, 256, 3, 2, 1), _res(256), _res(256)),
            S(C(256, 512, 3, 2, 1), _res(512)),
            S(C(512, 512, 3, 1, 0), C(512, 512, 1, 1, 0)),
        ])
        self.audio_encoder = S(
            C(1, 32, 3, 1, 1), _res(32), _res(32),
            C(32, 64, 3, (3, 1), 1), _res(64), _res(64),
            C(64, 128, 3, 3, 1), _res(128), _res(128),
            C(128, 256, 3, (3, 2), 1), _res(256),
            C(256, 512, 3, 1, 0), C(512, 512, 1, 1, 0))
        T = ConvTransposeBNReLU
        self.face_decoder_blocks = nn.ModuleList([
            S(C(512, 512, 1, 1, 0)),
            S(T(1024, 512, 3, 1, 0), _res(512)),
            S(T(1024, 512, 3, 2, 1, 1), _res(512), _res(512)),
            S(T(768, 384, 3, 2, 1, 1), _res(384), _res(384)),
            S(T(512, 256, 3, 2, 1, 1), _res(256), _res(256)),
            S(T(320, 128, 3, 2, 1, 1), _res(128), _res(128)),
            S(T(160, 64, 3, 2, 1, 1), _res(64), _res(64)),
        ])
        self.output_block = S(C(80, 32, 3, 1, 1), nn.Conv2d(32, 3, 1, 1, 0), nn.Sigmoid())

    def forward(self, audio, face):
        x = self.audio_encoder(audio)
        skips = []
        y = face
        for block in self.face_encoder_blocks:
            y = block(y)
            skips.append(y)
        for block in self.face_decoder_blocks:
            x = torch.cat((block(x), skips.pop()), dim=1)
        return self.output_block(x)


def randomize(model: nn.Module, seed: int, output_gain: float = 30.0) -> nn.Module:
    """Random weights and non-trivial BN state (scale ~ U(0.5,1.5), bias, running mean ~ N(0,0.1),
    running var ~ U(0.5,2)), set explicitly so eval mode differs from train mode and from the
    identity BN. Convs keep torch's default init drawn from the seed; the final 1x1 conv's weight
    is multiplied by `output_gain` so the sigmoid's outputs spread over (0,1) instead of sitting
    at 0.5 +- 0.01 (which would make an output comparison weak)."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
            module.reset_parameters()
        if isinstance(module, nn.BatchNorm2d):
            n = module.num_features
            with torch.no_grad():
                module.weight.copy_(0.5 + torch.rand(n, generator=gen))
                module.bias.copy_(0.1 * torch.randn(n, generator=gen))
                module.running_mean.copy_(0.1 * torch.randn(n, generator=gen))
                module.running_var.copy_(0.5 + 1.5 * torch.rand(n, generator=gen))
                module.num_batches_tracked.fill_(1000)
    with torch.no_grad():
        model.output_block[1].weight.mul_(output_gain)
    return model


def save_wav2lip_style_checkpoint(model: nn.Module, path) -> None:
    """torch.save the way Wav2Lip's train script does with nn.DataParallel: {"state_dict":
    {"module." + key: tensor}, "optimizer": <Adam state_dict>, "global_step": 1,
    "global_epoch": 1}."""
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    torch.save({"state_dict": {"module." + k: v for k, v in model.state_dict().items()},
                "optimizer": optimizer.state_dict(), "global_step": 1, "global_epoch": 1}, path)
