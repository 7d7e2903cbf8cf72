"""The avatar's networks, small enough to run per frame on 2 CPU cores and exported to ONNX.

Channels-first tensors. Image-like inputs are linear RGB / unit normals in [-1, 1]; outputs are bounded by their
final activation so an exported net can never produce out-of-range layers.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def _block(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    # GroupNorm, not BatchNorm: enrollment batches are small and the exported net must not depend on batch stats.
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1),
        nn.GroupNorm(min(8, c_out), c_out),
        nn.SiLU(),
        nn.Conv2d(c_out, c_out, 3, padding=1),
        nn.GroupNorm(min(8, c_out), c_out),
        nn.SiLU(),
    )


class UNet(nn.Module):
    """A small U-Net: `widths` channels at successive half resolutions, skip connections, 1x1 head."""

    def __init__(self, c_in: int, c_out: int, widths: tuple[int, ...] = (16, 32, 64, 96)):
        super().__init__()
        self.down = nn.ModuleList()
        prev = c_in
        for i, w in enumerate(widths):
            self.down.append(_block(prev, w, stride=1 if i == 0 else 2))
            prev = w
        self.up = nn.ModuleList()
        for w_skip in reversed(widths[:-1]):
            self.up.append(_block(prev + w_skip, w_skip))
            prev = w_skip
        self.head = nn.Conv2d(prev, c_out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
        skips.pop()
        for block in self.up:
            skip = skips.pop()
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = block(torch.cat([x, skip], dim=1))
        return self.head(x)


class DecompositionNet(nn.Module):
    """Portrait (+ coarse mesh normals) -> normal residual, albedo, specular weight (ReliTalk's intrinsic split).

    One shared U-Net trunk with three heads keeps the per-frame cost of building the idle-loop layers low; they run
    once per loop frame at enrollment, not live.
    """

    def __init__(self, widths: tuple[int, ...] = (16, 32, 64, 96), max_residual: float = 0.5, work_scale: int = 1):
        super().__init__()
        self.max_residual = max_residual
        # work_scale > 1: the trunk sees the inputs averaged down by this factor and its outputs are upsampled
        # bilinearly; the refined normals still carry the full-resolution coarse normals. The layers it predicts are
        # low-frequency corrections, and a quarter of the pixels makes training fit a CPU budget. Trained at S/k with
        # work_scale 1, the same weights run on S-px frames with work_scale k.
        self.work_scale = work_scale
        self.trunk = UNet(6, 7, widths)
        # Set once after training (DecompositionModelTorch.normalise_exposure): the albedo's share of the
        # albedo/light scale, so the learned lighting has the presets' exposure. 1 while training.
        self.register_buffer("albedo_gain", torch.ones(()))

    def forward(self, image: torch.Tensor, coarse_normals: torch.Tensor):
        x = torch.cat([image, coarse_normals], dim=1)
        if self.work_scale > 1:
            out = self.trunk(F.avg_pool2d(x, self.work_scale))
            out = F.interpolate(out, size=image.shape[-2:], mode="bilinear", align_corners=False)
        else:
            out = self.trunk(x)
        residual = self.max_residual * torch.tanh(out[:, 0:3])
        normals = F.normalize(coarse_normals + residual, dim=1)
        albedo = (torch.sigmoid(out[:, 3:6]) * self.albedo_gain).clamp(max=1.0)
        spec_weight = torch.sigmoid(out[:, 6:7])
        return normals, residual, albedo, spec_weight


class ShadingCorrection(nn.Module):
    """Learned correction of analytic SH shading: S_shad(N, L) = S_sh(N, L) * exp(delta(N)), one grey gain per normal
    (what SH irradiance lacks and the surface carries: occlusion in folds and sockets, darkening toward grazing
    normals).

    The gain depends on the normal only, not on the lighting. Learned under the video's one lighting, a gain that
    also took the shading value could be any function off that lighting's shading (under another lighting it
    extrapolated: -4 dB under one of the synthetic clip's held-out lights), and a per-channel one tinted the face
    green-grey under the presets; colour belongs to the albedo and the light. A normal-only gain also cancels
    exactly in a relit idle frame (its albedo is folded with it), so only generated pixels (the mouth) depend on it.
    1x1 convolutions: a few multiply-adds per pixel live.
    """

    def __init__(self, hidden: int = 16, max_log_gain: float = 0.7):
        super().__init__()
        self.max_log_gain = max_log_gain
        self.mlp = nn.Sequential(nn.Conv2d(3, hidden, 1), nn.SiLU(), nn.Conv2d(hidden, 1, 1))

    def log_gain(self, normals: torch.Tensor) -> torch.Tensor:
        """(B, 1, H, W) log of the gain, bounded by max_log_gain."""
        return self.max_log_gain * torch.tanh(self.mlp(normals))

    def forward(self, normals: torch.Tensor, sh_shading: torch.Tensor) -> torch.Tensor:
        return sh_shading * torch.exp(self.log_gain(normals))


class MouthNet(nn.Module):
    """Mouth crop renderer and seam blender (ReliTalk eq. 5-8, in intrinsic layers so the mouth relights too).

    Inputs: the driven mesh's coarse normal map of the mouth crop (3), and the idle-loop frame's albedo and normals
    with the mouth region masked out (3 + 3) plus that mask (1). Outputs: albedo (3), normals (3), specular weight
    (1), and a blend alpha (1) that says where the generated mouth replaces the idle frame, so the seam is learned.
    """

    def __init__(self, widths: tuple[int, ...] = (24, 48, 96)):
        super().__init__()
        self.unet = UNet(10, 8, widths)

    def forward(self, coarse_normals, idle_albedo, idle_normals, mouth_mask):
        out = self.unet(torch.cat([coarse_normals, idle_albedo, idle_normals, mouth_mask], dim=1))
        albedo = torch.sigmoid(out[:, 0:3])
        normals = F.normalize(out[:, 3:6] + coarse_normals, dim=1)
        spec_weight = torch.sigmoid(out[:, 6:7])
        blend = torch.sigmoid(out[:, 7:8])
        return albedo, normals, spec_weight, blend


class AudioToExpression(nn.Module):
    """Log-mel window (B, n_mels, T) -> lip expression coefficients (B, n_coeffs) at the window's anchor frame.

    1-D convolutions summarise ~25 ms of context per step; self-attention then looks across the whole window
    (past + lookahead) so co-articulation from neighbouring phonemes shapes the current mouth. The anchor (the
    current video frame) sits `lookahead_frames` before the window's end; only it is read out.
    """

    def __init__(self, n_mels: int = 80, n_coeffs: int = 16, width: int = 128, heads: int = 4, layers: int = 2,
                 window_frames: int = 24, lookahead_frames: int = 8):
        super().__init__()
        self.anchor = window_frames - 1 - lookahead_frames
        self.conv = nn.Sequential(
            nn.Conv1d(n_mels, width, 3, padding=1), nn.GELU(),
            nn.Conv1d(width, width, 3, padding=1), nn.GELU(),
        )
        self.position = nn.Parameter(torch.zeros(1, window_frames, width))
        layer = nn.TransformerEncoderLayer(width, heads, dim_feedforward=2 * width, dropout=0.1, batch_first=True,
                                           norm_first=True)
        self.attention = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Linear(width, n_coeffs)

    def forward(self, mel_window: torch.Tensor) -> torch.Tensor:
        h = self.conv(mel_window).transpose(1, 2) + self.position
        h = self.attention(h)
        return self.head(h[:, self.anchor])
