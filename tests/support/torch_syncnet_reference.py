"""PyTorch mirror of syncnet_python's SyncNet v2 (joonson/syncnet_python SyncNetModel.py, class S)
and of the score computation in SyncNetInstance.evaluate, for the parity tests and
benchmarks/syncnet.py only.

Attribute names and Sequential positions follow the reference, so the state-dict keys are the
reference's ("netcnnaud.0.weight", "netcnnlip.19.running_var", "netfclip.3.bias") and a real
syncnet_v2.model loads into `TorchSyncNet`. The layers are written out by hand from the reference
source, independently of metatalk_jax.models.syncnet's tables, so the tests compare two separate
transcriptions.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn


def _block2d(cin, cout, k, s=1, p=1):
    return [nn.Conv2d(cin, cout, kernel_size=k, stride=s, padding=p), nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True)]


def _block3d(cin, cout, k, s=(1, 1, 1), p=(0, 1, 1)):
    return [nn.Conv3d(cin, cout, kernel_size=k, stride=s, padding=p), nn.BatchNorm3d(cout),
            nn.ReLU(inplace=True)]


def _head(out):
    return nn.Sequential(nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, out))


class TorchSyncNet(nn.Module):
    """forward_aud([B,1,13,20]) and forward_lip([B,3,5,224,224]) -> [B,1024] each."""

    def __init__(self, embedding: int = 1024):
        super().__init__()
        self.netcnnaud = nn.Sequential(
            *_block2d(1, 64, (3, 3)), nn.MaxPool2d((1, 1), (1, 1)),
            *_block2d(64, 192, (3, 3)), nn.MaxPool2d((3, 3), (1, 2)),
            *_block2d(192, 384, (3, 3)),
            *_block2d(384, 256, (3, 3)),
            *_block2d(256, 256, (3, 3)), nn.MaxPool2d((3, 3), (2, 2)),
            *_block2d(256, 512, (5, 4), p=0))
        self.netfcaud = _head(embedding)
        self.netfclip = _head(embedding)
        self.netcnnlip = nn.Sequential(
            *_block3d(3, 96, (5, 7, 7), (1, 2, 2), 0), nn.MaxPool3d((1, 3, 3), (1, 2, 2)),
            *_block3d(96, 256, (1, 5, 5), (1, 2, 2), (0, 1, 1)),
            nn.MaxPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1)),
            *_block3d(256, 256, (1, 3, 3)),
            *_block3d(256, 256, (1, 3, 3)),
            *_block3d(256, 256, (1, 3, 3)), nn.MaxPool3d((1, 3, 3), (1, 2, 2)),
            *_block3d(256, 512, (1, 6, 6), p=0))

    def forward_aud(self, x):
        mid = self.netcnnaud(x)
        return self.netfcaud(mid.view(mid.size(0), -1))

    def forward_lip(self, x):
        mid = self.netcnnlip(x)
        return self.netfclip(mid.view(mid.size(0), -1))


def randomize(model: nn.Module, seed: int) -> nn.Module:
    """Default-init weights drawn from `seed` and non-trivial BN state (scale ~ U(0.5,1.5), bias
    and running mean ~ N(0,0.1)*k, running var ~ U(0.5,2)), so eval mode is not the identity."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Conv3d, nn.Linear)):
            module.reset_parameters()
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            n = module.num_features
            with torch.no_grad():
                module.weight.copy_(0.5 + torch.rand(n, generator=gen))
                module.bias.copy_(0.1 * torch.randn(n, generator=gen))
                module.running_mean.copy_(0.1 * torch.randn(n, generator=gen))
                module.running_var.copy_(0.5 + 1.5 * torch.rand(n, generator=gen))
                module.num_batches_tracked.fill_(1000)
    return model


def reference_calc_pdist(feat1, feat2, vshift=15):
    """The reference formula, per frame: pairwise_distance of video feature i against audio
    features i-vshift..i+vshift of the zero-padded audio features -> list of [2*vshift+1]."""
    win = 2 * vshift + 1
    padded = torch.nn.functional.pad(feat2, (0, 0, vshift, vshift))
    return [torch.nn.functional.pairwise_distance(feat1[[i], :].repeat(win, 1),
                                                  padded[i:i + win, :])
            for i in range(len(feat1))]


def reference_evaluate(model: TorchSyncNet, frames_bgr: np.ndarray, num_samples: int,
                       mfcc_rows: np.ndarray, vshift: int = 15, batch_size: int = 20) -> dict:
    """SyncNetInstance.evaluate after its file decoding: frames_bgr [T,224,224,3] (what
    cv2.imread gives), num_samples of 16 kHz audio and its MFCC [rows,13].
    Returns {"offset", "min_dist", "conf", "dists" [N,31], "fconf" (median-filtered, k=9)}."""
    from scipy import signal

    model.eval()
    im = torch.from_numpy(frames_bgr.astype(np.float32)).permute(3, 0, 1, 2)[None]  # [1,3,T,H,W]
    cc = torch.from_numpy(mfcc_rows.T.astype(np.float32))[None, None]             # [1,1,13,R]
    min_length = min(len(frames_bgr), math.floor(num_samples / 640))
    lastframe = min_length - 5
    im_feat, cc_feat = [], []
    with torch.no_grad():
        for i in range(0, lastframe, batch_size):
            frames = range(i, min(lastframe, i + batch_size))
            im_feat.append(model.forward_lip(torch.cat([im[:, :, v:v + 5] for v in frames], 0)))
            cc_feat.append(model.forward_aud(
                torch.cat([cc[..., 4 * v:4 * v + 20] for v in frames], 0)))
    im_feat, cc_feat = torch.cat(im_feat, 0), torch.cat(cc_feat, 0)
    dists = reference_calc_pdist(im_feat, cc_feat, vshift)
    mdist = torch.mean(torch.stack(dists, 1), 1)
    minval, minidx = torch.min(mdist, 0)
    fdist = np.stack([d[minidx].numpy() for d in dists])
    fconf = torch.median(mdist).numpy() - fdist
    return {"offset": int(vshift - minidx), "min_dist": float(minval),
            "conf": float(torch.median(mdist) - minval),
            "dists": np.array([d.numpy() for d in dists]),
            "fconf": signal.medfilt(fconf, kernel_size=9),
            "video_features": im_feat.numpy(), "audio_features": cc_feat.numpy()}
