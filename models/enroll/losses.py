"""Losses and priors of the decomposition (ReliTalk eq. 9-18, 21), as plain functions of tensors.

All maps are channels-first (B, C, H, W); `mask` is (B, 1, H, W) in [0, 1] and restricts each term to the face or
person region (a term over an empty mask is 0, not NaN).
"""

from __future__ import annotations

import math

import torch


def _masked_mean(values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    if mask is None:
        return values.mean()
    weight = mask.expand_as(values)
    return (values * weight).sum() / weight.sum().clamp_min(1.0)


def reconstruction_l1(rendered: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Photometric term: mean |rendered - target| over the mask."""
    return _masked_mean((rendered - target).abs(), mask)


def normal_residual_l1(residual: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """L1 on the normal residual: keeps refined normals near the mesh's coarse normals unless the image insists."""
    return _masked_mean(residual.abs(), mask)


def total_variation(x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Anisotropic TV: mean |x(p) - x(p + right)| + |x(p) - x(p + down)|, over pixel pairs inside the mask."""
    dx = (x[..., :, 1:] - x[..., :, :-1]).abs()
    dy = (x[..., 1:, :] - x[..., :-1, :]).abs()
    if mask is None:
        return dx.mean() + dy.mean()
    mx = mask[..., :, 1:] * mask[..., :, :-1]
    my = mask[..., 1:, :] * mask[..., :-1, :]
    return _masked_mean(dx, mx) + _masked_mean(dy, my)


def histogram_entropy(
    values: torch.Tensor, mask: torch.Tensor | None = None, bins: int = 32, bandwidth: float | None = None
) -> torch.Tensor:
    """Entropy (nats, summed over channels) of a soft histogram of `values` in [0, 1] over the mask.

    The parsimony prior: a face has few distinct albedos (skin, lips, brows), so low entropy of the albedo
    distribution pushes shading variation out of the albedo and into the shading. Gaussian bin weights keep it
    differentiable; the maximum is C * log(bins) for C channels spread evenly.
    """
    b, c, h, w = values.shape
    bandwidth = bandwidth or 1.0 / bins
    centres = (torch.arange(bins, dtype=values.dtype, device=values.device) + 0.5) / bins
    flat = values.permute(1, 0, 2, 3).reshape(c, -1, 1)  # (C, N, 1)
    weights = torch.exp(-0.5 * ((flat - centres) / bandwidth) ** 2)  # (C, N, bins)
    weights = weights / weights.sum(dim=-1, keepdim=True).clamp_min(1e-12)
    if mask is not None:
        m = mask.expand(b, 1, h, w).permute(1, 0, 2, 3).reshape(1, -1, 1)
        weights = weights * m
    hist = weights.sum(dim=1)
    p = hist / hist.sum(dim=-1, keepdim=True).clamp_min(1e-12)
    return -(p * torch.log(p.clamp_min(1e-12))).sum()


def max_entropy(channels: int, bins: int = 32) -> float:
    """Upper bound of histogram_entropy for `channels` channels: every bin equally filled."""
    return channels * math.log(bins)
