"""Enrollment stage 2: split the prepared crops into albedo, refined normals and specular weight under one learned
lighting (ReliTalk eq. 9-18, 21), then compute the idle-loop frames' layers.

The video's lighting is unknown and fixed, so one SH lighting L (9x3) is learned together with the nets:

    I ~= A * (S_shad(N, L) * g(N) + C_spec * S_spec(N, key))       inside the person matte (face weighted x2)

with N = normalize(N_coarse + residual), g the learned shading correction (a grey gain of the normal,
nets.ShadingCorrection) and `key` one learned light (direction, colour) for the specular lobe.
The albedo / lighting split is ambiguous in scale, so L is renormalised every step to a fixed mean L00 (the constant
term); colour is pinned by a weak prior tying albedo chroma to image chroma. After training the split is rescaled
once (`normalise_exposure`, exact: the frames reconstruct the same) so the face's brightest diffuse shading is 1,
the exposure the presets and HDR maps are given (less where that would clip the albedo of more than 0.5 % of the
person): a pinned L00 says nothing about how bright the face is lit (the default avatar's learned light lit it at
5.9), and under a preset such an avatar came out 6x too dark. Priors: L1 on the normal residual (the mesh is right
unless the image insists), TV + histogram entropy on the albedo (few, flat materials: shading variation must go to
S), TV on C_spec and the residual, a small L1 on C_spec (no specular unless it explains something) and on the
shading correction's log-gain (g is for occlusion the SH model lacks, not a second albedo).

To fit the CPU budget the nets train on whole frames averaged down by `work_scale` (2: 128 px for S = 256), a
quarter of the pixels per step; the decomposition net then runs on full frames with the same factor inside
(DecompositionNet.work_scale): its albedo / residual / C_spec are low-frequency layers upsampled bilinearly, the
refined normals keep the full-resolution mesh normals, and folding (below) restores the albedo's detail. Batches are
drawn from a pool of frames spread evenly over the training range, held in memory at the training resolution.

Checkpoints (nets, lighting, optimizer, RNG states, step, loss history) go to the work folder every
`checkpoint_every_s`; a rerun with resume continues at the saved step and draws exactly the batches the
uninterrupted run would have drawn, so its losses match step for step.

Idle-loop layers (`frame_layers`): the net's albedo is smooth and loses detail the frame has (pores, fine shadows
the priors pushed out). With `fold_residual` the per-frame reconstruction residual is folded into the albedo:
albedo_eff = I / (S_shad g + C_spec S_spec) under the learned L, so rendering the layers under L gives the frame
back exactly (up to clamping to [0, 1] and where the shading is too dark to divide by). docs/enroll.md has the
measured effect of both choices on relighting.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch.nn import functional as F

from models.colour import srgb_to_linear
from models.enroll.losses import histogram_entropy, normal_residual_l1, reconstruction_l1, total_variation
from models.enroll.nets import DecompositionNet, ShadingCorrection
from models.enroll.render_torch import TorchLighting, random_lighting, relight, shading, specular, srgb_encode
from models.enroll.workdir import WorkDir
from models.face.identity import chip_affine_from_mesh
from models.lighting.sh import constant_sh, project_directional

STAGE = "decompose"
MODEL_FILE = "decompose/model.pt"
# 2: grey, normal-only shading gain; exposure normalised after training. Part of the params' JSON, so checkpoints, stage
# records and model files of an earlier format are not taken for this one.
MODEL_FORMAT = 2
EXPOSURE_PERCENTILE = 99.0  # the face's "brightest" diffuse shading, robust to a few glancing pixels
ALBEDO_HEADROOM_PERCENTILE = 99.5  # the share of the person's albedo that must stay <= 1 after normalise_exposure
MIN_FOLD_SHADING = 0.02  # frame_layers keeps the net's albedo where the shading is darker than this
# sRGB byte -> linear value, so converting a batch is one table lookup.
SRGB_TO_LINEAR_LUT = srgb_to_linear(np.arange(256, dtype=np.float32) / 255.0).astype(np.float32)


@dataclass(frozen=True)
class DecomposeParams:
    """Everything that changes the trained decomposition (recorded with the stage; changing it retrains)."""

    widths: tuple[int, ...] = (16, 32, 48, 64)
    work_scale: int = 2  # train on frames averaged down by this; run on full frames with the same factor inside
    steps: int = 800
    batch: int = 4
    lr: float = 3e-3
    # 10x the nets' rate once the warm-up ends, with w_shading_gain 0.5 (v12): the lighting moves off its estimate
    # toward the clip's and the shading correction stays near 1; on two synthetic clips (seeds 7, 11) relighting
    # 26.76 -> 27.03 and 26.69 -> 26.90 dB (docs/enroll.md).
    light_lr: float = 3e-2
    light_warmup_frac: float = 0.3  # the lighting stays at its estimate while the nets settle (first 30 % of steps)
    final_lr_frac: float = 0.1  # cosine decay to this fraction of lr by the last step
    shininess: float = 32.0
    init_key_specular: float = 0.5  # integrated radiance of the specular key light at the start
    max_pool_frames: int = 400
    # Initial lighting: ambient radiance plus a frontal key slightly above the camera; the ambient's L00 is also the
    # scale every step renormalises L to (the split's scale ambiguity).
    init_ambient: float = 0.35
    init_key: float = 1.75  # integrated radiance of the key light
    init_key_elevation_deg: float = 15.0
    w_face: float = 1.0  # extra reconstruction weight on the face oval (on top of the matte)
    w_residual: float = 0.15
    w_residual_tv: float = 0.05
    w_albedo_tv: float = 0.02
    w_albedo_entropy: float = 0.003
    w_chroma: float = 0.2
    w_spec_tv: float = 0.02
    w_spec_l1: float = 0.002
    w_shading_gain: float = 0.5
    # Identity-consistent supervision (ReliTalk): the frame relit under a random lighting must keep the person's
    # face embedding (dlib's face-recognition ResNet, models.face.identity); on `identity_frames` of each batch.
    w_identity: float = 0.0
    identity_frames: int = 2
    checkpoint_every_s: float = 120.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch < 1 or self.max_pool_frames < 1:
            raise ValueError("steps, batch and max_pool_frames must be >= 1")
        if self.w_identity < 0 or self.identity_frames < 1:
            raise ValueError("w_identity must be >= 0 and identity_frames >= 1")
        if self.work_scale not in (1, 2, 4):
            raise ValueError(f"work_scale must be 1, 2 or 4, got {self.work_scale}")

    def to_json(self) -> dict:
        d = asdict(self)
        d["widths"] = list(self.widths)
        d["model_format"] = MODEL_FORMAT
        return d


def frontal_sh(params: DecomposeParams) -> np.ndarray:
    """Frontal lighting: constant ambient + one key light above the camera axis (the start when the image gives
    no estimate)."""
    e = math.radians(params.init_key_elevation_deg)
    key_dir = np.array([0.0, math.sin(e), math.cos(e)])
    return (constant_sh([params.init_ambient] * 3) + project_directional(key_dir, [params.init_key] * 3)).astype(
        np.float32
    )


def initial_sh(pool: FramePool, params: DecomposeParams, max_frames: int = 16) -> np.ndarray:
    """Start for the learned lighting: the least-squares SH of the face pixels of a few pool frames at their coarse
    normals with a uniform albedo (models.lighting.estimate, ridge-regularised), made grey (the chroma prior says
    colour belongs to the albedo) and scaled to the frontal start's L00 (the pinned scale).

    Over a face, whose normals mostly face the camera, some coefficient combinations (z vs. the z^2 term) are
    nearly collinear, so the fitted numbers can look odd; what matters is the shading they give on the normals the
    face has, which is well determined. Starting near the answer matters: from a frontal guess the nets learn to
    paint the shading into the albedo faster than the light turns. Falls back to the frontal lighting when the
    frames have too few face pixels."""
    from models.lighting.estimate import estimate_sh

    frontal = frontal_sh(params)
    pick = np.linspace(0, len(pool) - 1, min(len(pool), max_frames)).round().astype(int)
    tall = lambda a: np.concatenate(list(np.asarray(a[pick], np.float32).transpose(0, 2, 3, 1)), axis=0)  # noqa
    mask = tall(pool.face)[..., 0] * (tall(pool.matte)[..., 0] > 0.5)
    try:
        sh = np.asarray(estimate_sh(tall(pool.image), tall(pool.coarse_normals), mask, albedo_linear=0.5), np.float64)
    except ValueError:
        return frontal
    grey = np.repeat(sh.mean(1, keepdims=True), 3, axis=1)
    if not np.isfinite(grey).all() or grey[0, 0] <= 0:
        return frontal
    return (grey * (frontal[0, 0] / grey[0, 0])).astype(np.float32)


# ------------------------------------------------------------------------------------------------- image formation


class LearnedLighting(torch.nn.Module):
    """The video's lighting as the renderer takes it: SH (9, 3) for diffuse shading, with its mean L00 pinned (the
    albedo/lighting scale ambiguity is fixed here), plus one key light (direction, integrated radiance) for the
    specular lobe. A lobe summed over the SH's directions would be a broad sheen that a sharp highlight cannot
    come from, so C_spec would have nothing to explain and the highlights would end up baked into the albedo."""

    def __init__(self, init_sh: np.ndarray, init_key_specular: float = 0.5):
        from models.lighting.estimate import dominant_light

        super().__init__()
        self.raw = torch.nn.Parameter(torch.as_tensor(init_sh, dtype=torch.float32).clone())
        self.register_buffer("l00_mean", torch.tensor(float(np.mean(init_sh[0]))))
        dirs, _ = dominant_light(init_sh)
        key = dirs[0] if len(dirs) else np.array([0.0, 0.0, 1.0], np.float32)
        self.key_dir = torch.nn.Parameter(torch.as_tensor(key, dtype=torch.float32).clone())
        self.key_log_rgb = torch.nn.Parameter(torch.full((3,), math.log(init_key_specular)))
        self.register_buffer("exposure", torch.ones(()))  # every radiance is divided by it (normalise_exposure)

    def forward(self) -> torch.Tensor:
        return self.raw * (self.l00_mean / self.raw[0].mean()) / self.exposure

    def specular_lights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(dirs (1, 3) unit, integrated radiance (1, 3))."""
        return F.normalize(self.key_dir, dim=0)[None], (torch.exp(self.key_log_rgb) / self.exposure)[None]


@dataclass
class Formation:
    """The terms of I = A * (S_diffuse + C_spec * S_spec), channels-first."""

    image: torch.Tensor
    diffuse: torch.Tensor  # corrected SH shading
    specular: torch.Tensor
    log_gain: torch.Tensor  # the shading correction's log gain (for its prior)


def form_image(albedo, normals, spec_weight, sh, shading_net: ShadingCorrection, light_dirs: torch.Tensor,
               light_rgb: torch.Tensor, shininess: float) -> Formation:
    # Clamped like models/render.shading: the 9-term irradiance dips below 0 opposite a strong light.
    s_sh = shading(normals, sh).clamp_min(0.0)
    log_gain = shading_net.log_gain(normals)
    diffuse = s_sh * torch.exp(log_gain)
    s_spec = specular(normals, light_dirs, light_rgb, shininess)
    return Formation(albedo * (diffuse + spec_weight * s_spec), diffuse, s_spec, log_gain)


# ------------------------------------------------------------------------------------------------------ frame pool


@dataclass
class FramePool:
    """Training frames in memory at the training resolution (S / work_scale), float16 channels-first:
    image (n, 3, s, s) linear RGB, coarse_normals (n, 3, s, s) (unit on the person, 0 off it), matte and face
    (n, 1, s, s) in [0, 1]."""

    indices: np.ndarray  # positions in the prepared frames
    image: np.ndarray
    coarse_normals: np.ndarray
    matte: np.ndarray
    face: np.ndarray
    chip_affine: np.ndarray | None = None  # (n, 2, 3) pool px -> identity chip px (models.face.identity)

    def __len__(self) -> int:
        return int(self.indices.size)


def downsample_frames(crops: np.ndarray, normals: np.ndarray, matte: np.ndarray, face: np.ndarray,
                      factor: int) -> tuple[np.ndarray, ...]:
    """Full-resolution frames (channels-last; crops uint8 sRGB) -> channels-first float32 at 1/factor.

    Colour is averaged in linear light (what a camera at the lower resolution records); normals are averaged and
    renormalised, and stay 0 where less than half the block is on the person."""
    image = torch.from_numpy(SRGB_TO_LINEAR_LUT[crops]).permute(0, 3, 1, 2)
    n = torch.from_numpy(np.asarray(normals, np.float32)).permute(0, 3, 1, 2)
    m = torch.from_numpy(np.asarray(matte, np.float32))[:, None]
    f = torch.from_numpy(np.asarray(face, np.float32))[:, None]
    if factor > 1:
        image, n, m, f = (F.avg_pool2d(x, factor) for x in (image, n, m, f))
        length = n.norm(dim=1, keepdim=True)
        n = n / length.clamp_min(1e-6) * (length > 0.5)
    return image.numpy(), n.numpy(), m.numpy(), f.numpy()


def load_pool(prepared, frame_indices: np.ndarray, work_scale: int, chunk: int = 32) -> FramePool:
    """Read and downsample prepared frames by position (in chunks: full-resolution frames are never all in memory)."""
    frame_indices = np.asarray(frame_indices, np.int64)
    parts = []
    for s in range(0, frame_indices.size, chunk):
        idx = frame_indices[s:s + chunk]
        normals = np.stack([prepared._read("normals", int(i)) for i in idx])
        parts.append(downsample_frames(prepared.crops(idx), normals, prepared.person_matte(idx),
                                       prepared.masks(idx)["face"], work_scale))
    image, n, m, f = (np.concatenate([p[k] for p in parts]).astype(np.float16) for k in range(4))
    # Crop px -> pool px is a division by the factor (pixel centres at +0.5 stay there under block averaging).
    chips = np.stack([chip_affine_from_mesh(prepared.landmarks_px[int(i)][:, :2] / work_scale) for i in frame_indices])
    return FramePool(frame_indices, image, n, m, f, chips.astype(np.float32))


def pool_indices(first: int, stop: int, max_frames: int) -> np.ndarray:
    """Up to max_frames positions spread evenly over [first, stop) (neighbouring frames are near duplicates)."""
    n = stop - first
    if n < 1:
        raise ValueError(f"empty training range [{first}, {stop})")
    return np.unique(np.linspace(first, stop - 1, min(n, max_frames)).round().astype(np.int64))


@dataclass
class Batch:
    image: torch.Tensor  # (B, 3, H, W) linear RGB
    coarse_normals: torch.Tensor  # (B, 3, H, W)
    matte: torch.Tensor  # (B, 1, H, W)
    face: torch.Tensor  # (B, 1, H, W)
    pool_positions: np.ndarray | None = None  # (B,) rows of the pool
    chip_affine: torch.Tensor | None = None  # (B, 2, 3)


def sample_batch(pool: FramePool, rng: np.random.Generator, params: DecomposeParams) -> Batch:
    pick = np.sort(rng.integers(0, len(pool), size=params.batch))
    t = lambda a: torch.from_numpy(a[pick].astype(np.float32))  # noqa: E731
    chips = None if pool.chip_affine is None else t(pool.chip_affine)
    return Batch(t(pool.image), t(pool.coarse_normals), t(pool.matte), t(pool.face), pick, chips)


class IdentityTerm:
    """Squared distance between the face embedding of a frame relit under a random lighting (the person relit,
    the frame's own background around it) and that of the frame itself (computed once per pool frame)."""

    def __init__(self) -> None:
        from models.face.identity import DlibFaceResNet

        self.embedder = DlibFaceResNet.load()
        self._targets: dict[int, torch.Tensor] = {}

    def embed(self, linear: torch.Tensor, chip_affine: torch.Tensor) -> torch.Tensor:
        from models.face.identity import sample_chips

        return self.embedder(sample_chips(srgb_encode(linear), chip_affine))

    def __call__(self, batch: Batch, light: TorchLighting, albedo, normals, spec_weight, shading_net,
                 shininess: float, frames: int) -> torch.Tensor:
        if batch.chip_affine is None or batch.pool_positions is None:
            raise ValueError("the identity term needs the pool's chip affines (load_pool computes them)")
        k = min(frames, batch.image.shape[0])
        for i in range(k):
            key = int(batch.pool_positions[i])
            if key not in self._targets:
                # One frame at a time: a convolution's result depends (in the last bits) on the batch it ran in,
                # and a resumed run must see the same targets as the uninterrupted one.
                with torch.no_grad():
                    self._targets[key] = self.embed(batch.image[i:i + 1], batch.chip_affine[i:i + 1])[0]
        target = torch.stack([self._targets[int(p)] for p in batch.pool_positions[:k]])
        person = relight(albedo[:k], normals[:k], spec_weight[:k], light, shading_net, shininess)
        matte = batch.matte[:k]
        relit = matte * person + (1.0 - matte) * batch.image[:k]
        return (self.embed(relit, batch.chip_affine[:k]) - target).pow(2).sum(dim=1).mean()


# ---------------------------------------------------------------------------------------------------------- losses


def _chroma(x: torch.Tensor) -> torch.Tensor:
    return x / x.sum(dim=1, keepdim=True).clamp_min(1e-3)


def decomposition_losses(batch: Batch, model: DecompositionModelTorch, params: DecomposeParams,
                         identity: IdentityTerm | None = None,
                         identity_light: TorchLighting | None = None) -> dict[str, torch.Tensor]:
    normals, residual, albedo, spec_weight = model.net(batch.image, batch.coarse_normals)
    sh = model.lighting()
    f = form_image(albedo, normals, spec_weight, sh, model.shading_net, *model.lighting.specular_lights(),
                   params.shininess)
    on_person = (batch.matte > 0.5).float()
    # Entropy over every 4th pixel: the histogram of a face does not need all of them and the kernel is (N x bins).
    sub_a, sub_m = albedo[..., ::4, ::4], batch.face[..., ::4, ::4]
    terms = {
        "recon": reconstruction_l1(f.image, batch.image, batch.matte + params.w_face * batch.face),
        "residual": params.w_residual * normal_residual_l1(residual, on_person),
        "residual_tv": params.w_residual_tv * total_variation(residual, on_person),
        "albedo_tv": params.w_albedo_tv * total_variation(albedo, on_person),
        "albedo_entropy": params.w_albedo_entropy * histogram_entropy(sub_a, sub_m if sub_m.sum() > 0 else None),
        "chroma": params.w_chroma * reconstruction_l1(_chroma(albedo), _chroma(batch.image), on_person),
        "spec_tv": params.w_spec_tv * total_variation(spec_weight, on_person),
        "spec_l1": params.w_spec_l1 * normal_residual_l1(spec_weight, on_person),
        "shading_gain": params.w_shading_gain * normal_residual_l1(f.log_gain, on_person),
    }
    if params.w_identity > 0:
        if identity is None or identity_light is None:
            raise ValueError("w_identity > 0 needs an IdentityTerm and a lighting to relight under")
        terms["identity"] = params.w_identity * identity(batch, identity_light, albedo, normals, spec_weight,
                                                         model.shading_net, params.shininess, params.identity_frames)
    terms["total"] = sum(terms.values())
    return terms


# ----------------------------------------------------------------------------------------------------------- model


class DecompositionModelTorch(torch.nn.Module):
    """The trainable parts together: decomposition net, shading correction, learned lighting."""

    def __init__(self, params: DecomposeParams, init_sh: np.ndarray | None = None):
        super().__init__()
        self.net = DecompositionNet(widths=tuple(params.widths))  # work_scale 1: it trains on downsampled frames
        self.shading_net = ShadingCorrection()
        self.lighting = LearnedLighting(frontal_sh(params) if init_sh is None else init_sh, params.init_key_specular)
        self.shininess = params.shininess
        self.work_scale = params.work_scale

    def full_resolution_net(self) -> DecompositionNet:
        """The trained net for S-px frames: same weights, downsampling inside (what is exported and run per frame)."""
        net = copy.deepcopy(self.net)
        net.work_scale = self.work_scale
        return net.eval()

    def sh_coeffs(self) -> np.ndarray:
        with torch.no_grad():
            return self.lighting().numpy().astype(np.float32)

    def specular_lights(self) -> tuple[np.ndarray, np.ndarray]:
        """The learned specular key light as (dirs (1, 3), integrated radiance (1, 3)), float32."""
        with torch.no_grad():
            dirs, rgb = self.lighting.specular_lights()
        return dirs.numpy().astype(np.float32), rgb.numpy().astype(np.float32)

    @torch.no_grad()
    def exposure_limits(self, pool: FramePool, max_frames: int = 32) -> tuple[float, float]:
        """On a few pool frames at the current scale: (the EXPOSURE_PERCENTILE of the grey diffuse shading (SH +
        correction) on the face, the ALBEDO_HEADROOM_PERCENTILE of the folded albedo's brightest channel on the
        person)."""
        pick = np.linspace(0, len(pool) - 1, min(len(pool), max_frames)).round().astype(int)
        t = lambda a: torch.from_numpy(a[pick].astype(np.float32))  # noqa: E731
        image = t(pool.image)
        normals, _, _, spec_weight = self.net(image, t(pool.coarse_normals))
        f = form_image(torch.ones_like(image), normals, spec_weight, self.lighting(), self.shading_net,
                       *self.lighting.specular_lights(), self.shininess)
        face = (t(pool.face)[:, 0] > 0.5) & (t(pool.matte)[:, 0] > 0.5)
        if not bool(face.any()):
            raise ValueError("no face pixels in the pool frames: cannot set the lighting's exposure")
        peak = float(np.percentile(f.diffuse.mean(dim=1)[face].numpy(), EXPOSURE_PERCENTILE))
        denom = f.image  # S_diffuse + C_spec S_spec, what frame_layers divides by; it folds where this exceeds
        # MIN_FOLD_SHADING after the rescale, i.e. MIN_FOLD_SHADING * peak here
        lit = (t(pool.matte)[:, 0] > 0.5) & (denom.min(dim=1).values > MIN_FOLD_SHADING * peak)
        folded = (image / denom).amax(dim=1)[lit]
        headroom = float(np.percentile(folded.numpy(), ALBEDO_HEADROOM_PERCENTILE)) if folded.numel() else 0.0
        return peak, headroom

    @torch.no_grad()
    def normalise_exposure(self, pool: FramePool) -> float:
        """Rescale the albedo / lighting split to the presets' exposure: lighting / k, albedo x k (clamped at 1).
        k puts the face's brightest diffuse shading at 1,
        unless that would push more than 0.5 % of the person's folded albedo over 1 (a white collar in shade, a
        highlight the specular lobe missed): then k is as large as that allows. The image formation is unchanged
        wherever the albedo stays below 1. Returns k."""
        peak, headroom = self.exposure_limits(pool)
        if not (np.isfinite(peak) and peak > 1e-6):
            raise ValueError(f"the learned lighting leaves the face unlit (diffuse peak {peak:g})")
        k = peak if headroom <= 0 else min(peak, 1.0 / headroom)
        self.lighting.exposure *= k
        self.net.albedo_gain *= k
        return k


def _make_optimizer(model: DecompositionModelTorch, params: DecomposeParams) -> torch.optim.Optimizer:
    return torch.optim.Adam(
        [
            {"params": list(model.net.parameters()) + list(model.shading_net.parameters()), "lr": params.lr},
            {"params": list(model.lighting.parameters()), "lr": params.light_lr},
        ]
    )


def _set_lr(opt: torch.optim.Optimizer, step: int, params: DecomposeParams) -> None:
    # Cosine decay, a pure function of the step so a resumed run follows the same schedule.
    t = step / max(params.steps - 1, 1)
    scale = params.final_lr_frac + (1.0 - params.final_lr_frac) * 0.5 * (1.0 + math.cos(math.pi * t))
    opt.param_groups[0]["lr"] = params.lr * scale
    # Early on the albedo is still random and the reconstruction error would drag the lighting anywhere.
    opt.param_groups[1]["lr"] = 0.0 if t < params.light_warmup_frac else params.light_lr * scale


@dataclass
class DecomposeResult:
    model: DecompositionModelTorch
    params: DecomposeParams
    steps_done: int
    elapsed_s: float  # training time summed over runs (resumed runs add up)
    loss_history: list[dict[str, float]] = field(default_factory=list)  # per step, every term
    resumed_from_step: int = 0

    @property
    def sh_coeffs(self) -> np.ndarray:
        return self.model.sh_coeffs()


@dataclass
class TrainRun:
    """What a (possibly resumed) training run did: steps done in total, training time summed over runs."""

    steps_done: int
    elapsed_s: float
    history: list[dict[str, float]]
    resumed_from_step: int


def run_resumable(workdir: WorkDir, stage: str, params_json: dict, module: torch.nn.Module,
                  opt: torch.optim.Optimizer, rng: np.random.Generator, total_steps: int, step_fn, *,
                  description: str, checkpoint_every_s: float, resume: bool = True, progress: bool = True,
                  max_steps_this_run: int | None = None, show: str = "total") -> TrainRun:
    """The training loop shared by the enrollment nets: rich progress with ETA, a checkpoint of module + optimizer +
    RNG states + step + loss history every `checkpoint_every_s` and at the end, and exact resumption.

    step_fn(step) -> dict of scalar loss tensors with "total" (it draws its batch from `rng` and may set the
    optimizer's learning rates); the loop does backward and the optimizer step. A checkpoint made with other params
    is ignored (training starts over). max_steps_this_run stops early (after checkpointing) for the next call.
    """
    step, elapsed, history = 0, 0.0, []
    ckpt = workdir.load_checkpoint(stage) if resume else None
    if ckpt is not None and ckpt.get("params") == params_json:
        module.load_state_dict(ckpt["module"])
        opt.load_state_dict(ckpt["optimizer"])
        rng.bit_generator.state = ckpt["numpy_rng"]
        torch.set_rng_state(ckpt["torch_rng"])
        step, elapsed, history = int(ckpt["step"]), float(ckpt["elapsed_s"]), list(ckpt["history"])
    resumed_from = step
    start = last_save = time.perf_counter()

    def save() -> None:
        workdir.save_checkpoint(stage, {
            "params": params_json, "module": module.state_dict(), "optimizer": opt.state_dict(),
            "numpy_rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state(), "step": step,
            "elapsed_s": elapsed + time.perf_counter() - start, "history": history,
        })

    module.train()
    with _progress(progress) as bar:
        task = bar.add_task(description, total=total_steps, completed=step, loss="")
        while step < total_steps and (max_steps_this_run is None or step - resumed_from < max_steps_this_run):
            terms = step_fn(step)
            opt.zero_grad(set_to_none=True)
            terms["total"].backward()
            opt.step()
            history.append({k: float(v.detach()) for k, v in terms.items()})
            step += 1
            bar.update(task, advance=1, loss=f"{show} {history[-1][show]:.4f}")
            if time.perf_counter() - last_save >= checkpoint_every_s:
                save()
                last_save = time.perf_counter()
    save()
    module.eval()
    return TrainRun(step, elapsed + time.perf_counter() - start, history, resumed_from)


def train_decomposition(
    workdir: WorkDir,
    pool: FramePool,
    params: DecomposeParams | None = None,
    *,
    resume: bool = True,
    progress: bool = True,
    max_steps_this_run: int | None = None,
) -> DecomposeResult:
    """Train (or continue training) the decomposition on `pool`; checkpoints in `workdir` under stage 'decompose'.

    resume: continue from the stage checkpoint if it was made with the same params (else start over).
    max_steps_this_run: stop (after checkpointing) once this many steps ran in this call; the next call resumes.
    The finished model is also saved to MODEL_FILE (see `save_model` / `load_model`).
    """
    params = params or DecomposeParams()
    torch.manual_seed(params.seed)
    model = DecompositionModelTorch(params, initial_sh(pool, params))
    opt = _make_optimizer(model, params)
    rng = np.random.default_rng(params.seed)

    identity = IdentityTerm() if params.w_identity > 0 else None

    def step_fn(step: int) -> dict[str, torch.Tensor]:
        _set_lr(opt, step, params)
        batch = sample_batch(pool, rng, params)
        # Drawn from the run's own generator, so a resumed run relights exactly as the uninterrupted one.
        light = random_lighting(rng) if identity is not None else None
        return decomposition_losses(batch, model, params, identity, light)

    run = run_resumable(workdir, STAGE, params.to_json(), model, opt, rng, params.steps, step_fn,
                        description="decomposition", checkpoint_every_s=params.checkpoint_every_s, resume=resume,
                        progress=progress, max_steps_this_run=max_steps_this_run, show="recon")
    result = DecomposeResult(model, params, run.steps_done, run.elapsed_s, run.history, run.resumed_from_step)
    if run.steps_done >= params.steps:
        # After the checkpoint (which keeps the training scale): a resumed finished run normalises the same way.
        model.normalise_exposure(pool)
        save_model(workdir, result)
    return result


def _progress(enabled: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[loss]}"),
        TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), disable=not enabled,
    )


def save_model(workdir: WorkDir, result: DecomposeResult) -> None:
    from models.enroll.workdir import atomic_path

    with atomic_path(workdir.path(MODEL_FILE)) as tmp:
        torch.save({"params": result.params.to_json(), "model": result.model.state_dict(),
                    "steps": result.steps_done, "elapsed_s": result.elapsed_s,
                    "final_losses": result.loss_history[-1] if result.loss_history else {}}, tmp)


def load_model(workdir: WorkDir) -> tuple[DecompositionModelTorch, dict]:
    """The finished decomposition of a work folder and its facts (params, steps, elapsed_s, final_losses)."""
    path = workdir.path(MODEL_FILE)
    if not path.is_file():
        raise ValueError(f"no trained decomposition in {workdir.root} ({MODEL_FILE} missing); run train_decomposition")
    state = torch.load(path, map_location="cpu", weights_only=False)
    p = dict(state["params"])
    found = p.pop("model_format", 1)
    if found != MODEL_FORMAT:
        raise ValueError(f"{path} is a decomposition of format {found}, this relitcam needs {MODEL_FORMAT} "
                         "(retrain it: enroll again, or delete that file)")
    p["widths"] = tuple(p["widths"])
    model = DecompositionModelTorch(DecomposeParams(**p))
    model.load_state_dict(state["model"])
    model.eval()
    return model, state


# ------------------------------------------------------------------------------------------------ per-frame layers


@dataclass(frozen=True)
class LayerStack:
    """Per-frame layers, channels-last float32: albedo (n, S, S, 3) linear, normals (n, S, S, 3) unit,
    spec_weight (n, S, S), matte (n, S, S); `albedo_net` is the net's own albedo (before folding)."""

    albedo: np.ndarray
    normals: np.ndarray
    spec_weight: np.ndarray
    matte: np.ndarray
    albedo_net: np.ndarray
    folded_fraction: float  # share of person pixels whose albedo came from folding (the rest kept the net's)


def frame_layers(model: DecompositionModelTorch, crops: np.ndarray, coarse_normals: np.ndarray, matte: np.ndarray,
                 fold_residual: bool = True, batch: int = 4, min_shading: float = MIN_FOLD_SHADING) -> LayerStack:
    """Run the decomposition on frames (crops uint8 sRGB (n, S, S, 3), coarse normals (n, S, S, 3), matte (n, S, S)
    in [0, 1]) and return their layers. With fold_residual the albedo reproduces each frame exactly under the
    learned lighting wherever the shading exceeds `min_shading` (and the result stays in [0, 1])."""
    outs = {k: [] for k in ("albedo", "normals", "spec", "albedo_net")}
    sh = model.lighting().detach()
    net = model.full_resolution_net()
    with torch.no_grad():
        for s in range(0, crops.shape[0], batch):
            image = torch.from_numpy(SRGB_TO_LINEAR_LUT[crops[s:s + batch]]).permute(0, 3, 1, 2).contiguous()
            cn = torch.from_numpy(np.asarray(coarse_normals[s:s + batch], np.float32)).permute(0, 3, 1, 2).contiguous()
            normals, _, albedo, spec_weight = net(image, cn)
            albedo_out = albedo
            if fold_residual:
                f = form_image(torch.ones_like(albedo), normals, spec_weight, sh, model.shading_net,
                               *model.lighting.specular_lights(), model.shininess)
                denom = f.image  # S_diffuse + C_spec S_spec
                folded = (image / denom.clamp_min(min_shading)).clamp(0.0, 1.0)
                albedo_out = torch.where(denom > min_shading, folded, albedo)
            outs["albedo"].append(albedo_out.permute(0, 2, 3, 1).numpy())
            outs["albedo_net"].append(albedo.permute(0, 2, 3, 1).numpy())
            outs["normals"].append(normals.permute(0, 2, 3, 1).numpy())
            outs["spec"].append(spec_weight[:, 0].numpy())
    albedo = np.concatenate(outs["albedo"])
    albedo_net = np.concatenate(outs["albedo_net"])
    person = np.asarray(matte) > 0.5
    changed = np.any(np.abs(albedo - albedo_net) > 1e-6, axis=-1)
    return LayerStack(
        albedo=albedo,
        normals=np.concatenate(outs["normals"]),
        spec_weight=np.concatenate(outs["spec"]),
        matte=np.asarray(matte, np.float32),
        albedo_net=albedo_net,
        folded_fraction=float((changed & person).sum() / max(person.sum(), 1)),
    )


def decompose_prepared(model: DecompositionModelTorch, prepared, frame_indices, fold_residual: bool = True,
                       batch: int = 4) -> LayerStack:
    """`frame_layers` for prepared frames by position (full resolution)."""
    idx = np.asarray(frame_indices, np.int64)
    normals = np.stack([prepared._read("normals", int(i)) for i in idx]).astype(np.float32)
    return frame_layers(model, prepared.crops(idx), normals, prepared.person_matte(idx), fold_residual=fold_residual,
                        batch=batch)
