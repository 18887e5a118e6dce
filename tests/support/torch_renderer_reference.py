"""PyTorch mirror of AudioDVP's neural face renderer (its vendored pix2pix: UnetGenerator with
use_refine, NLayerDiscriminator, NFRModel.optimize_parameters), written for the parity tests and
the benchmark, plus the map from its state_dict to our Flax variables.

The module nesting reproduces the reference's nn.Sequential layout, so state_dict keys are the
reference's (e.g. 'model.model.1.model.3.model.5.model.0.0.weight'), and a checkpoint trained by
AudioDVP loads into these classes and, through `unet_variables_from_torch`, into ours. The
in-place LeakyReLU of the reference is kept: it is what makes the skip connections carry
LeakyReLU(x).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


class TorchRefine(nn.Module):
    """RefineModule: 2 x Sequential(conv3x3 (bias), BN, [Dropout], ReLU)."""

    def __init__(self, channels: int, use_dropout: bool):
        super().__init__()
        stages = []
        for _ in range(2):
            layers = [nn.Conv2d(channels, channels, 3, 1, 1), nn.BatchNorm2d(channels)]
            if use_dropout:
                layers.append(nn.Dropout(0.5))
            layers.append(nn.ReLU(True))
            stages.append(nn.Sequential(*layers))
        self.model = nn.Sequential(*stages)

    def forward(self, x):
        return self.model(x)


class TorchUnetBlock(nn.Module):
    """UnetSkipConnectionBlock with BatchNorm (so no conv bias except the outermost up-conv)."""

    def __init__(self, outer_nc, inner_nc, input_nc=None, submodule=None, outermost=False,
                 innermost=False, use_dropout=False, use_refine=False):
        super().__init__()
        self.outermost = outermost
        input_nc = outer_nc if input_nc is None else input_nc
        down_conv = nn.Conv2d(input_nc, inner_nc, 4, 2, 1, bias=False)
        up_in = inner_nc if innermost else inner_nc * 2
        up_conv = nn.ConvTranspose2d(up_in, outer_nc, 4, 2, 1, bias=outermost)
        refine = [TorchRefine(up_in, use_dropout)] if use_refine else []
        if outermost:
            layers = [down_conv, submodule, nn.ReLU(True), *refine, up_conv, nn.Tanh()]
        elif innermost:
            layers = [nn.LeakyReLU(0.2, True), down_conv, nn.ReLU(True), *refine, up_conv,
                      nn.BatchNorm2d(outer_nc)]
        else:
            layers = [nn.LeakyReLU(0.2, True), down_conv, nn.BatchNorm2d(inner_nc), submodule,
                      nn.ReLU(True), *refine, up_conv, nn.BatchNorm2d(outer_nc)]
        if use_dropout and not outermost:
            layers.append(nn.Dropout(0.5))
        self.model = nn.Sequential(*layers)

    def forward(self, x):
        if self.outermost:
            return self.model(x)
        return torch.cat([x, self.model(x)], 1)


class TorchUnetGenerator(nn.Module):
    """UnetGenerator, built inside-out with the reference's dropout rule (the innermost block and
    the intermediate ngf*8 blocks except the outermost of them)."""

    def __init__(self, input_nc, output_nc=3, num_downs=8, ngf=64, use_dropout=True,
                 use_refine=True):
        super().__init__()
        block = TorchUnetBlock(ngf * 8, ngf * 8, innermost=True, use_dropout=use_dropout,
                               use_refine=use_refine)
        for i in range(num_downs - 5):
            if i == num_downs - 6:
                use_dropout = False
            block = TorchUnetBlock(ngf * 8, ngf * 8, submodule=block, use_dropout=use_dropout,
                                   use_refine=use_refine)
        for mult in (4, 2, 1):
            block = TorchUnetBlock(ngf * mult, ngf * mult * 2, submodule=block,
                                   use_refine=use_refine)
        self.model = TorchUnetBlock(output_nc, ngf, input_nc=input_nc, submodule=block,
                                    outermost=True, use_refine=use_refine)

    def forward(self, x):
        return self.model(x)


class TorchPatchDiscriminator(nn.Module):
    """NLayerDiscriminator with BatchNorm."""

    def __init__(self, input_nc, ndf=64, n_layers=3):
        super().__init__()
        layers = [nn.Conv2d(input_nc, ndf, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        channels = ndf
        for n in range(1, n_layers + 1):
            out = ndf * min(2 ** n, 8)
            stride = 2 if n < n_layers else 1
            layers += [nn.Conv2d(channels, out, 4, stride, 1, bias=False), nn.BatchNorm2d(out),
                       nn.LeakyReLU(0.2, True)]
            channels = out
        layers.append(nn.Conv2d(channels, 1, 4, 1, 1))
        self.model = nn.Sequential(*layers)

    def forward(self, x):
        return self.model(x)


def init_pix2pix_weights(net: nn.Module, seed: int, gain: float = 0.02, bn_noise: float = 0.02):
    """pix2pix 'normal' init (conv weights N(0, gain), biases 0, BN weight N(1, gain), BN bias 0),
    then, so parity tests exercise every parameter, BN biases N(0, bn_noise) and conv biases
    N(0, gain) (zero biases would hide a missing or misplaced bias)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * gain)
                if m.bias is not None:
                    m.bias.copy_(torch.randn(m.bias.shape, generator=g) * gain)
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(1.0 + torch.randn(m.weight.shape, generator=g) * gain)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * bn_noise)
    return net


# ------------------------------------------------------------------------------------------------
# state_dict -> Flax variables
# ------------------------------------------------------------------------------------------------

def _numpy_copy(state_dict) -> dict:
    """state_dict values as numpy copies (a tensor's .numpy() shares memory with the module, whose
    running stats later forward passes would then change under our feet)."""
    return {k: np.array(v.detach().cpu().numpy() if hasattr(v, "detach") else v, copy=True)
            for k, v in state_dict.items()}


def _conv(sd, key):
    """torch Conv2d weight [O,I,kh,kw] -> HWIO."""
    return np.asarray(sd[key + ".weight"]).transpose(2, 3, 1, 0)


def _bn(sd, key):
    return ({"scale": np.asarray(sd[key + ".weight"]), "bias": np.asarray(sd[key + ".bias"])},
            {"mean": np.asarray(sd[key + ".running_mean"]),
             "var": np.asarray(sd[key + ".running_var"])})


def _unet_prefix(level: int) -> str:
    """state_dict prefix of U-Net level `level` (0 = outermost): the submodule sits at index 1 of
    the outermost block's Sequential and at index 3 of every middle block's."""
    prefix = "model.model."
    for depth in range(1, level + 1):
        prefix += ("1" if depth == 1 else "3") + ".model."
    return prefix


def unet_variables_from_torch(state_dict, num_downs: int, use_refine: bool = True) -> dict:
    """TorchUnetGenerator / AudioDVP netG state_dict (tensors or arrays) -> {'params',
    'batch_stats'} for metatalk_jax.models.renderer.UnetGenerator. ConvTranspose2d weights
    [I,O,kh,kw] become the scatter-layout kernel [kh,kw,I,O] (no flip; UpConv2d documents why)."""
    sd = _numpy_copy(state_dict)
    params, stats = {}, {}
    r = 1 if use_refine else 0
    for level in range(num_downs):
        pre = _unet_prefix(level)
        outermost, innermost = level == 0, level == num_downs - 1
        p, s = {}, {}
        if outermost:
            down, refine, up, up_norm, down_norm = 0, 3, 3 + r, None, None
        elif innermost:
            down, refine, up, up_norm, down_norm = 1, 3, 3 + r, 4 + r, None
        else:
            down, refine, up, up_norm, down_norm = 1, 5, 5 + r, 6 + r, 2
        p["down_conv"] = {"kernel": _conv(sd, f"{pre}{down}")}
        if down_norm is not None:
            p["down_norm"], s["down_norm"] = _bn(sd, f"{pre}{down_norm}")
        if use_refine:
            p["refine"], s["refine"] = {}, {}
            for i in range(2):
                key = f"{pre}{refine}.model.{i}"
                p["refine"][f"conv_{i}"] = {"kernel": _conv(sd, f"{key}.0"),
                                            "bias": sd[f"{key}.0.bias"]}
                p["refine"][f"norm_{i}"], s["refine"][f"norm_{i}"] = _bn(sd, f"{key}.1")
        p["up_conv"] = {"kernel": sd[f"{pre}{up}.weight"].transpose(2, 3, 0, 1)}
        if outermost:
            p["up_conv"]["bias"] = sd[f"{pre}{up}.bias"]
        if up_norm is not None:
            p["up_norm"], s["up_norm"] = _bn(sd, f"{pre}{up_norm}")
        params[f"level_{level}"] = p
        if s:
            stats[f"level_{level}"] = s
    return {"params": params, "batch_stats": stats}


def patch_d_variables_from_torch(state_dict, n_layers: int = 3) -> dict:
    """TorchPatchDiscriminator / AudioDVP netD state_dict -> Flax variables for
    metatalk_jax.models.renderer.PatchDiscriminator."""
    sd = _numpy_copy(state_dict)
    params = {"conv_0": {"kernel": _conv(sd, "model.0"), "bias": sd["model.0.bias"]}}
    stats = {}
    for n in range(1, n_layers + 1):
        params[f"conv_{n}"] = {"kernel": _conv(sd, f"model.{3 * n - 1}")}
        params[f"norm_{n}"], stats[f"norm_{n}"] = _bn(sd, f"model.{3 * n}")
    last = 3 * n_layers + 2
    params[f"conv_{n_layers + 1}"] = {"kernel": _conv(sd, f"model.{last}"),
                                      "bias": sd[f"model.{last}.bias"]}
    return {"params": params, "batch_stats": stats}


# ------------------------------------------------------------------------------------------------
# The pix2pix training step
# ------------------------------------------------------------------------------------------------

class TorchPix2PixStep:
    """NFRModel.optimize_parameters: G forward; D step on (A, G(A).detach()) and (A, B) with
    (D_fake + D_real) / 2; G step on BCE(D(A, G(A)), 1) + lambda_l1 * L1 with D frozen (but still
    in train mode, so its running stats move). Adam(lr, betas=(0.5, 0.999)) for each net."""

    def __init__(self, net_g, net_d, lr=2e-4, beta1=0.5, lambda_l1=100.0, eps=1e-8):
        self.net_g, self.net_d, self.lambda_l1 = net_g, net_d, lambda_l1
        self.opt_g = torch.optim.Adam(net_g.parameters(), lr=lr, betas=(beta1, 0.999), eps=eps)
        self.opt_d = torch.optim.Adam(net_d.parameters(), lr=lr, betas=(beta1, 0.999), eps=eps)
        self.bce = nn.BCEWithLogitsLoss()

    def _gan(self, logits, real: bool):
        return self.bce(logits, torch.full_like(logits, 1.0 if real else 0.0))

    def __call__(self, real_a, real_b) -> dict[str, float]:
        self.net_g.train()
        self.net_d.train()
        fake_b = self.net_g(real_a)
        for p in self.net_d.parameters():
            p.requires_grad_(True)
        self.opt_d.zero_grad()
        d_fake = self._gan(self.net_d(torch.cat([real_a, fake_b.detach()], 1)), False)
        d_real = self._gan(self.net_d(torch.cat([real_a, real_b], 1)), True)
        ((d_fake + d_real) * 0.5).backward()
        self.opt_d.step()
        for p in self.net_d.parameters():
            p.requires_grad_(False)
        self.opt_g.zero_grad()
        g_gan = self._gan(self.net_d(torch.cat([real_a, fake_b], 1)), True)
        g_l1 = torch.mean(torch.abs(fake_b - real_b))
        (g_gan + self.lambda_l1 * g_l1).backward()
        self.opt_g.step()
        losses = {"d_fake": d_fake, "d_real": d_real, "g_gan": g_gan, "g_l1": g_l1}
        return {name: float(value.detach()) for name, value in losses.items()}
