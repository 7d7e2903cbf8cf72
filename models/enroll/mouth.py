"""Enrollment stage 3: the mouth net, which renders the talking mouth as intrinsic layers (albedo, normals, C_spec)
in an M x M box of an idle-loop frame, plus the blend alpha that pastes it in (ReliTalk eq. 5-8, relightable).

What the net gets, at training and live alike (the functions below are the ones the live renderer calls, so the
two cannot drift apart):

  coarse_normals  the driven mesh's smooth normals rasterised in the box (`mouth_coarse_normals`): mesh only, zero
                  where no triangle covers the pixel, so the open mouth (the mesh has no triangles across the lips)
                  reads as a zero hole and the net paints teeth / tongue / cavity there;
  mouth_mask      where the mouth may change the picture (`mouth_region_mask`): the hull of the lip-region vertices
                  of the idle mesh and of the driven mesh, grown by a few px, kept `mask_margin_px` inside the box;
  idle layers     the idle frame's albedo and normals in the box, zeroed inside the mask.

Live, the idle frame i and the driven mesh (frame i's mesh with audio-driven lips) share frame i's pose, so the
context around the mask always matches the coarse normals. Training makes the same situation from one frame t: its
own mesh drives, its own layers outside the mask are the context, its own layers are the target. Two things teach
what same-frame training alone would not: the mask is sometimes widened by another frame's lip region (live, the
idle and the driven lips differ, and the union is what gets masked), and the blend is trained against a wrong mouth
(another frame's layers fill the mask underneath), so it learns to cover the whole changed region and fall to 0
outside it.

Losses: L1 of the composited layers relit under the learned lighting and under `random_lightings` random lightings
per step (ambient + key, explicit lights for the specular lobe, as the live renderer uses them), so the mouth
relights consistently with the face around it; a perceptual L1 on early activations of dlib's face-recognition
ResNet (CC0 weights from the `face_recognition_models` package, models.face.identity) of the box under the learned
lighting; L1 on the layers themselves; blend near 0 outside the grown mask and smooth (TV).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch

from models.enroll.decompose import (
    DecompositionModelTorch,
    LayerStack,
    WorkDir,
    frame_layers,
    run_resumable,
)
from models.enroll.expression import lip_region
from models.enroll.losses import total_variation
from models.enroll.nets import MouthNet
from models.enroll.render_torch import TorchLighting, random_lighting, relight, srgb_encode
from models.face.masks import clear_border, grown_hulls_mask
from models.raster import interpolate, rasterize, vertex_normals

STAGE = "mouth"
MODEL_FILE = "mouth/model.pt"
# Lip-region vertices that take at least this much of the driven shape bound the mask (as prepare's mouth_region).
REGION_WEIGHT_MIN = 0.5


@dataclass(frozen=True)
class MouthParams:
    mouth_frac: float = 0.375  # M / S (96 px at S = 256); rounded to a multiple of 8
    box_center_down_frac: float = 0.1  # box centre below the lip region's centre, in M: room for the opening jaw
    mask_grow_frac: float = 0.02  # extra dilation of the mask, in S
    # The mask stays this far inside the box. The lip region's hull reaches past the box under the nose and at the
    # upper corners; there the net painted up to the border with no context to match (the idle frame is zeroed
    # under the mask) and the blend's fade to the border showed as a line under the nose (docs/eval_real.md v13).
    # With a margin the net sees the idle frame all around the box and fades into it. 0 = as before v13.
    mask_margin_px: int = 8
    widths: tuple[int, ...] = (16, 32, 64)
    steps: int = 2000  # 500 left the lips thin and the seam stair-stepped: +1.4 dB mouth PSNR on the real clip
    batch: int = 8
    lr: float = 2e-3
    final_lr_frac: float = 0.1
    union_prob: float = 0.5  # share of samples whose mask also holds another frame's lip region
    random_lightings: int = 2
    w_relit_learned: float = 1.0
    w_relit_random: float = 1.0
    # Finite differences of the relit composite against the target's (L1): a per-pixel L1 is satisfied by a blurred
    # mouth (teeth and lip edges averaged away) and by a step at the mask edge; edges are what this term sees.
    # Off by default: on the real clip (docs/eval_real.md) w_relit_grad 1 + w_inside_mask 2 + 800 steps made the held-out
    # 120x120 mouth worse (own lips 34.1 -> 30.5 dB, SSIM 0.964 -> 0.928: coloured fringes on the lip line, no teeth).
    w_relit_grad: float = 0.0
    # Extra per-pixel weight of the relit terms inside the mouth mask (the generated part; outside it the blend
    # mostly copies the context, which is easy and would otherwise dominate the mean). Off by default, as above.
    w_inside_mask: float = 0.0
    # Perceptual: L1 between early activations of dlib's face-recognition ResNet (CC0 weights from PyPI,
    # models.face.identity) on the box relit under the learned lighting, sRGB, against the target's: face-trained
    # filters that respond to lip edges, folds and teeth, which a per-pixel L1 averages away. On the real clip
    # (docs/eval_real.md v11) 0.1 / 0.5 / 2: held-out mouth SSIM 0.861 -> 0.865 / 0.865 / 0.863, PSNR 27.78 ->
    # 27.84 / 27.75 / 27.66; at 0.5 the skin folds and lip edges around the mouth come back. ~14 % more per step.
    w_perceptual: float = 0.5
    perceptual_blocks: int = 3
    # Adversarial: a small patch discriminator (PatchDiscriminator) learns to tell the relit box (learned lighting,
    # sRGB) from the recorded one inside the mouth mask, and the net is pushed toward what it calls recorded (hinge
    # loss). L1 and the perceptual term are satisfied by an average of the teeth the net cannot place; a
    # discriminator is not. Starts after `adversarial_start_frac` of the steps (the mouth first learns its shape).
    # 0 = off.
    w_adversarial: float = 0.0
    adversarial_start_frac: float = 0.25
    discriminator_width: int = 32
    w_layers: float = 0.5
    w_blend_outside: float = 0.5
    w_blend_tv: float = 0.05
    # The blend is at least a feathered copy of the mouth mask, fading to 0 at the box border (CoveringMouthNet):
    # without it the learned blend settled at ~0.13 inside the mask on the real clip (a real mouth of another frame
    # under the blend costs less L1 than the net's own mouth), so the live avatar showed the idle loop's recorded
    # lips, not the driven ones.
    cover_mask: bool = True
    feather_px: int = 6
    shininess: float = 32.0
    checkpoint_every_s: float = 120.0
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.1 <= self.mouth_frac <= 1.0:
            raise ValueError(f"mouth_frac must be in [0.1, 1], got {self.mouth_frac}")
        if self.steps < 1 or self.batch < 1:
            raise ValueError("steps and batch must be >= 1")

    def mouth_px(self, size_px: int) -> int:
        return max(16, int(round(self.mouth_frac * size_px / 8)) * 8)

    def to_json(self) -> dict:
        d = asdict(self)
        d["widths"] = list(self.widths)
        # Off: recorded as before they existed (work folders stay valid).
        for key in ("w_relit_grad", "w_inside_mask", "mask_margin_px"):
            if d[key] == 0:
                del d[key]
        if d["w_perceptual"] == 0:
            del d["w_perceptual"], d["perceptual_blocks"]
        if d["w_adversarial"] == 0:
            del d["w_adversarial"], d["adversarial_start_frac"], d["discriminator_width"]
        if not d["cover_mask"]:
            del d["cover_mask"], d["feather_px"]
        return d

    @classmethod
    def from_json(cls, d: dict) -> "MouthParams":
        """Inverse of to_json, for a trained net's saved params: a field to_json leaves out when off is off."""
        d = {**d, "widths": tuple(d["widths"])}
        d.setdefault("mask_margin_px", 0)
        d.setdefault("w_perceptual", 0.0)
        d.setdefault("cover_mask", False)
        return cls(**d)


# ------------------------------------------------------------------------------------------- geometry of the box


def _region_points(landmarks_px: np.ndarray) -> np.ndarray:
    region = lip_region()
    return np.asarray(landmarks_px, np.float64)[region.indices[region.weights >= REGION_WEIGHT_MIN], :2]


def mouth_box(landmarks_px: np.ndarray, size_px: int, mouth_px: int, center_down_frac: float = 0.1) -> np.ndarray:
    """Top-left (x, y) int32 of the M x M box in the S x S crop: centred on the lip region's bounding box (a little
    lower, where the jaw opens), kept inside the crop."""
    pts = _region_points(landmarks_px)
    centre = 0.5 * (pts.min(0) + pts.max(0)) + np.array([0.0, center_down_frac * mouth_px])
    top_left = np.rint(centre - mouth_px / 2).astype(np.int64)
    return np.clip(top_left, 0, size_px - mouth_px).astype(np.int32)


def mouth_region_mask(meshes_px: list[np.ndarray], box_xy: np.ndarray, mouth_px: int, grow_px: float,
                      margin_px: int = 0) -> np.ndarray:
    """bool (M, M): union over the meshes (crop px) of their lip-region hull, grown LIP_HULL_GROWTH about its
    centre, then dilated by grow_px, in the box with top-left box_xy; cleared within margin_px of the box's border."""
    offset = np.asarray(box_xy, np.float64)
    mask = grown_hulls_mask([_region_points(mesh) - offset for mesh in meshes_px], (mouth_px, mouth_px),
                            grow_px=grow_px)
    return clear_border(mask, margin_px)


def mouth_coarse_normals(landmarks_px: np.ndarray, triangles: np.ndarray, box_xy: np.ndarray,
                         mouth_px: int) -> np.ndarray:
    """float32 (M, M, 3): smooth vertex normals of the mesh (crop px, y down) rasterised in the box, camera frame
    (y up); zero where no triangle covers the pixel (the open mouth, off the face)."""
    p = np.asarray(landmarks_px, np.float64)
    normals_v = vertex_normals(p * np.array([1.0, -1.0, 1.0]), triangles)
    shifted = p - np.array([box_xy[0], box_xy[1], 0.0])
    raster = rasterize(shifted, triangles, mouth_px, mouth_px)
    n = interpolate(normals_v, raster)
    length = np.linalg.norm(n, axis=-1, keepdims=True)
    return np.where(length > 1e-6, n / np.maximum(length, 1e-6), 0.0).astype(np.float32)


def cut_box(images: np.ndarray, boxes: np.ndarray, mouth_px: int) -> np.ndarray:
    """(n, S, S, ...) -> (n, M, M, ...) at each frame's box."""
    return np.stack([img[y:y + mouth_px, x:x + mouth_px] for img, (x, y) in zip(images, boxes)])


# ----------------------------------------------------------------------------------------------- training samples


@dataclass
class MouthSamples:
    """Per training frame, everything in its own mouth box (channels-last float32 unless said):
    coarse_normals (n, M, M, 3); albedo (n, M, M, 3) linear; normals (n, M, M, 3); spec_weight (n, M, M);
    own_mask (n, M, M) bool; hulls: each frame's grown lip-region hull polygon in crop px (for mask unions);
    boxes (n, 2) int32."""

    coarse_normals: np.ndarray
    albedo: np.ndarray
    normals: np.ndarray
    spec_weight: np.ndarray
    own_mask: np.ndarray
    landmarks_px: np.ndarray  # (n, 468, 3)
    boxes: np.ndarray
    mouth_px: int
    grow_px: float
    margin_px: int = 0

    def __len__(self) -> int:
        return int(self.boxes.shape[0])


def build_samples(layers: LayerStack, landmarks_px: np.ndarray, triangles: np.ndarray, size_px: int,
                  params: MouthParams) -> MouthSamples:
    """Cut the decomposition layers of training frames (full resolution) and their meshes into mouth samples."""
    m = params.mouth_px(size_px)
    grow = params.mask_grow_frac * size_px
    boxes = np.stack([mouth_box(lm, size_px, m, params.box_center_down_frac) for lm in landmarks_px])
    coarse = np.stack([mouth_coarse_normals(lm, triangles, b, m) for lm, b in zip(landmarks_px, boxes)])
    margin = params.mask_margin_px
    masks = np.stack([mouth_region_mask([lm], b, m, grow, margin) for lm, b in zip(landmarks_px, boxes)])
    return MouthSamples(
        coarse_normals=coarse,
        albedo=cut_box(layers.albedo, boxes, m),
        normals=cut_box(layers.normals, boxes, m),
        spec_weight=cut_box(layers.spec_weight, boxes, m),
        own_mask=masks,
        landmarks_px=np.asarray(landmarks_px, np.float32),
        boxes=boxes,
        mouth_px=m,
        grow_px=grow,
        margin_px=margin,
    )


@dataclass
class MouthBatch:
    coarse_normals: torch.Tensor  # (B, 3, M, M)
    mask: torch.Tensor  # (B, 1, M, M) 1 = to be generated
    idle_albedo: torch.Tensor  # masked context
    idle_normals: torch.Tensor
    under_albedo: torch.Tensor  # what lies under the blend: the target outside the mask, a wrong mouth inside
    under_normals: torch.Tensor
    under_spec: torch.Tensor
    albedo: torch.Tensor  # targets
    normals: torch.Tensor
    spec_weight: torch.Tensor


def _chw(a: np.ndarray) -> torch.Tensor:
    a = np.asarray(a, np.float32)
    if a.ndim == 3:
        a = a[..., None]
    return torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2)))


def sample_mouth_batch(samples: MouthSamples, rng: np.random.Generator, params: MouthParams) -> MouthBatch:
    b = params.batch
    pick = rng.integers(0, len(samples), size=b)
    other = (pick + rng.integers(1, max(len(samples), 2), size=b)) % len(samples)
    union = rng.random(b) < params.union_prob
    masks = samples.own_mask[pick].copy()
    for k in np.flatnonzero(union):
        # Another frame's lips, placed as they sit in that frame's crop, over this frame's box.
        masks[k] |= mouth_region_mask([samples.landmarks_px[other[k]]], samples.boxes[pick[k]], samples.mouth_px,
                                      samples.grow_px, samples.margin_px)
    keep = ~masks[..., None]
    albedo, normals, spec = samples.albedo[pick], samples.normals[pick], samples.spec_weight[pick]
    under = lambda own, wrong: np.where(keep if own.ndim == 4 else keep[..., 0], own, wrong)  # noqa: E731
    return MouthBatch(
        coarse_normals=_chw(samples.coarse_normals[pick]),
        mask=_chw(masks),
        idle_albedo=_chw(albedo * keep),
        idle_normals=_chw(normals * keep),
        under_albedo=_chw(under(albedo, samples.albedo[other])),
        under_normals=_chw(under(normals, samples.normals[other])),
        under_spec=_chw(under(spec, samples.spec_weight[other])),
        albedo=_chw(albedo),
        normals=_chw(normals),
        spec_weight=_chw(spec),
    )


# -------------------------------------------------------------------------------------------------------- training


def mouth_losses(batch: MouthBatch, net: torch.nn.Module, decomposition: DecompositionModelTorch,
                 lightings: list[TorchLighting], params: MouthParams,
                 perceptual_net: torch.nn.Module | None = None,
                 discriminator: torch.nn.Module | None = None) -> dict[str, torch.Tensor]:
    """The mouth net's loss terms ("total" sums them). With a `discriminator`, also "adversarial" (the net's
    term; gradients reach only the net) and "discriminator" (its own hinge loss; gradients reach only it), so one
    backward of "total" trains both."""
    albedo, normals, spec, blend = net(batch.coarse_normals, batch.idle_albedo, batch.idle_normals, batch.mask)
    comp_a = blend * albedo + (1 - blend) * batch.under_albedo
    comp_n = torch.nn.functional.normalize(blend * normals + (1 - blend) * batch.under_normals, dim=1)
    comp_s = blend * spec + (1 - blend) * batch.under_spec
    sc = decomposition.shading_net
    relit = []
    weight = 1.0 + params.w_inside_mask * batch.mask
    weight = weight / weight.mean()
    for k, lighting in enumerate(lightings):
        pred = relight(comp_a, comp_n, comp_s, lighting, sc, params.shininess)
        with torch.no_grad():
            target = relight(batch.albedo, batch.normals, batch.spec_weight, lighting, sc, params.shininess)
        w = params.w_relit_learned if k == 0 else params.w_relit_random / max(len(lightings) - 1, 1)
        term = (weight * (pred - target).abs()).mean()
        if params.w_relit_grad > 0:
            term = term + params.w_relit_grad * gradient_l1(pred, target, weight)
        relit.append(w * term)
        if k == 0 and params.w_perceptual > 0:
            if perceptual_net is None:
                raise ValueError("w_perceptual > 0 needs the perceptual net (models.face.identity.DlibFaceResNet)")
            with torch.no_grad():
                target_features = perceptual_net.features(srgb_encode(target), params.perceptual_blocks)
            features = perceptual_net.features(srgb_encode(pred), params.perceptual_blocks)
            perceptual = sum((f - g).abs().mean() for f, g in zip(features, target_features)) / len(features)
        if k == 0 and discriminator is not None:
            adversarial = adversarial_terms(discriminator, srgb_encode(pred), srgb_encode(target), batch.mask)
    outside = 1.0 - batch.mask
    terms = {
        "relit": sum(relit),
        "layers": params.w_layers * ((comp_a - batch.albedo).abs().mean() + (comp_n - batch.normals).abs().mean()
                                     + (comp_s - batch.spec_weight).abs().mean()),
        "blend_outside": params.w_blend_outside * (blend * outside).sum() / outside.sum().clamp_min(1.0),
        "blend_tv": params.w_blend_tv * total_variation(blend),
    }
    if params.w_perceptual > 0:
        terms["perceptual"] = params.w_perceptual * perceptual
    if discriminator is not None:
        terms["adversarial"] = params.w_adversarial * adversarial[0]
        terms["discriminator"] = adversarial[1]
    terms["total"] = sum(terms.values())
    return terms


class PatchDiscriminator(torch.nn.Module):
    """Logits (B, 1, h, w), one per overlapping ~30 px patch of an sRGB (B, 3, M, M) box: recorded (> 0) or
    generated (< 0). Spectral-normalised convolutions keep it from overpowering a small net on a short video."""

    def __init__(self, width: int = 32):
        super().__init__()
        sn = torch.nn.utils.parametrizations.spectral_norm
        w = int(width)
        self.layers = torch.nn.Sequential(
            sn(torch.nn.Conv2d(3, w, 4, 2, 1)), torch.nn.LeakyReLU(0.2),
            sn(torch.nn.Conv2d(w, 2 * w, 4, 2, 1)), torch.nn.LeakyReLU(0.2),
            sn(torch.nn.Conv2d(2 * w, 4 * w, 3, 1, 1)), torch.nn.LeakyReLU(0.2),
            sn(torch.nn.Conv2d(4 * w, 1, 3, 1, 1)),
        )

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.layers(image * 2.0 - 1.0)


def adversarial_terms(discriminator: torch.nn.Module, generated: torch.Tensor, recorded: torch.Tensor,
                      mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(the generator's hinge term, the discriminator's hinge loss), patches weighted by how much of them lies in
    the mouth mask (outside it the box is the recorded context, the same in both). The generator's term runs the
    discriminator with its parameters detached, and the discriminator's sees the generated box detached, so one
    backward of their sum gives each side only its own gradient."""
    frozen = {name: p.detach() for name, p in discriminator.named_parameters()}
    fake_for_generator = torch.func.functional_call(discriminator, frozen, (generated,))
    weight = torch.nn.functional.adaptive_avg_pool2d(mask, fake_for_generator.shape[-2:])
    weight = weight / weight.sum().clamp_min(1e-6)
    generator = -(weight * fake_for_generator).sum()
    real = discriminator(recorded)
    fake = discriminator(generated.detach())
    own = (weight * (torch.relu(1.0 - real) + torch.relu(1.0 + fake))).sum()
    return generator, own


def gradient_l1(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | float = 1.0) -> torch.Tensor:
    """Weighted L1 between the x and y forward differences of two (B, C, H, W) images."""
    w = weight if isinstance(weight, torch.Tensor) else torch.full_like(pred[:, :1], float(weight))
    dx = (pred[..., :, 1:] - pred[..., :, :-1]) - (target[..., :, 1:] - target[..., :, :-1])
    dy = (pred[..., 1:, :] - pred[..., :-1, :]) - (target[..., 1:, :] - target[..., :-1, :])
    return (w[..., :, 1:] * dx.abs()).mean() + (w[..., 1:, :] * dy.abs()).mean()


class CoveringMouthNet(torch.nn.Module):
    """MouthNet whose blend is forced to cover the mouth mask and to fade out at the box border:
    blend = edge * (1 - (1 - learned) * (1 - cover)), cover = the mask averaged over a (2 feather_px + 1)^2 window
    (1 inside, 0.5 on its edge, 0 beyond feather_px outside), edge = a ramp from 0 on the box border to 1 at
    feather_px inside (the mask can reach past the box, e.g. under the nose: a blend of 1 there is a hard seam).
    Same inputs and outputs as MouthNet (the bundle's `mouth` net contract)."""

    def __init__(self, widths: tuple[int, ...], feather_px: int = 6):
        super().__init__()
        self.net = MouthNet(widths=tuple(widths))
        self.feather_px = int(feather_px)

    def forward(self, coarse_normals, idle_albedo, idle_normals, mouth_mask):
        albedo, normals, spec_weight, blend = self.net(coarse_normals, idle_albedo, idle_normals, mouth_mask)
        r = self.feather_px
        cover = torch.nn.functional.avg_pool2d(mouth_mask, 2 * r + 1, stride=1, padding=r, count_include_pad=True)
        h, w = mouth_mask.shape[-2:]
        ys = torch.arange(h, dtype=mouth_mask.dtype, device=mouth_mask.device)
        xs = torch.arange(w, dtype=mouth_mask.dtype, device=mouth_mask.device)
        ramp_y = torch.clamp((torch.minimum(ys, h - 1 - ys) + 0.5) / r, 0.0, 1.0)
        ramp_x = torch.clamp((torch.minimum(xs, w - 1 - xs) + 0.5) / r, 0.0, 1.0)
        edge = ramp_y[:, None] * ramp_x[None, :]
        return albedo, normals, spec_weight, edge * (1.0 - (1.0 - blend) * (1.0 - cover))


def make_mouth_net(params: dict | MouthParams) -> torch.nn.Module:
    p = params.to_json() if isinstance(params, MouthParams) else params
    if p.get("cover_mask", False):
        return CoveringMouthNet(tuple(p["widths"]), int(p.get("feather_px", 6)))
    return MouthNet(widths=tuple(p["widths"]))


def learned_lighting(decomposition: DecompositionModelTorch) -> TorchLighting:
    dirs, colours = decomposition.specular_lights()
    return TorchLighting(torch.from_numpy(decomposition.sh_coeffs()), torch.from_numpy(dirs),
                         torch.from_numpy(colours))


@dataclass
class MouthResult:
    net: torch.nn.Module
    params: MouthParams
    mouth_px: int
    steps_done: int
    elapsed_s: float
    loss_history: list[dict[str, float]]
    resumed_from_step: int = 0


def module_fingerprint(module: torch.nn.Module) -> str:
    """sha256 (16 hex digits) of a module's parameters and buffers, in state_dict order."""
    import hashlib

    h = hashlib.sha256()
    for name, value in module.state_dict().items():
        h.update(name.encode())
        h.update(value.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def train_mouth(workdir: WorkDir, samples: MouthSamples, decomposition: DecompositionModelTorch,
                params: MouthParams | None = None, *, resume: bool = True, progress: bool = True,
                max_steps_this_run: int | None = None) -> MouthResult:
    """Train (or continue) the mouth net on `samples`; checkpoints under stage 'mouth'. The decomposition (learned
    lighting and shading correction) is frozen."""
    params = params or MouthParams()
    torch.manual_seed(params.seed)
    net = make_mouth_net(params)
    trained: torch.nn.Module = net
    discriminator = None
    if params.w_adversarial > 0:
        discriminator = PatchDiscriminator(params.discriminator_width)
        trained = torch.nn.ModuleDict({"net": net, "discriminator": discriminator})  # both in every checkpoint
        opt = torch.optim.Adam([{"params": net.parameters(), "lr": params.lr},
                                {"params": discriminator.parameters(), "lr": params.lr, "betas": (0.5, 0.999)}])
    else:
        opt = torch.optim.Adam(net.parameters(), lr=params.lr)
    rng = np.random.default_rng(params.seed)
    for p in decomposition.parameters():
        p.requires_grad_(False)
    learned = learned_lighting(decomposition)
    perceptual_net = None
    if params.w_perceptual > 0:
        from models.face.identity import DlibFaceResNet

        perceptual_net = DlibFaceResNet.load()
    # The decomposition's fingerprint too: a checkpoint trained on another decomposition's layers and lighting (a
    # retrained one, a new format) must not be resumed as if it were this one's.
    params_json = {**params.to_json(), "mouth_px": samples.mouth_px, "samples": len(samples),
                   "decomposition": module_fingerprint(decomposition)}

    def step_fn(step: int) -> dict[str, torch.Tensor]:
        t = step / max(params.steps - 1, 1)
        opt.param_groups[0]["lr"] = params.lr * (
            params.final_lr_frac + (1 - params.final_lr_frac) * 0.5 * (1 + math.cos(math.pi * t)))
        batch = sample_mouth_batch(samples, rng, params)
        lightings = [learned] + [random_lighting(rng) for _ in range(params.random_lightings)]
        adversarial_on = discriminator is not None and step >= params.adversarial_start_frac * params.steps
        return mouth_losses(batch, net, decomposition, lightings, params, perceptual_net,
                            discriminator if adversarial_on else None)

    run = run_resumable(workdir, STAGE, params_json, trained, opt, rng, params.steps, step_fn, description="mouth",
                        checkpoint_every_s=params.checkpoint_every_s, resume=resume, progress=progress,
                        max_steps_this_run=max_steps_this_run, show="relit")
    result = MouthResult(net, params, samples.mouth_px, run.steps_done, run.elapsed_s, run.history,
                         run.resumed_from_step)
    if run.steps_done >= params.steps:
        save_mouth(workdir, result)
    return result


def save_mouth(workdir: WorkDir, result: MouthResult) -> None:
    from models.enroll.workdir import atomic_path

    with atomic_path(workdir.path(MODEL_FILE)) as tmp:
        torch.save({"params": result.params.to_json(), "net": result.net.state_dict(), "mouth_px": result.mouth_px,
                    "steps": result.steps_done, "elapsed_s": result.elapsed_s,
                    "final_losses": result.loss_history[-1] if result.loss_history else {}}, tmp)


def load_mouth(workdir: WorkDir) -> tuple[torch.nn.Module, dict]:
    path = workdir.path(MODEL_FILE)
    if not path.is_file():
        raise ValueError(f"no trained mouth net in {workdir.root} ({MODEL_FILE} missing); run train_mouth")
    state = torch.load(path, map_location="cpu", weights_only=False)
    net = make_mouth_net(state["params"])
    net.load_state_dict(state["net"])
    return net.eval(), state


# ------------------------------------------------------------------------------------------------------ inference


@dataclass(frozen=True)
class MouthLayers:
    """The mouth net's output pasted into full frames' layers (channels-last, as LayerStack)."""

    albedo: np.ndarray
    normals: np.ndarray
    spec_weight: np.ndarray
    blend: np.ndarray  # (n, M, M)


def paste_mouth(net: MouthNet, layers: LayerStack, idle_landmarks_px: np.ndarray, driven_landmarks_px: np.ndarray,
                triangles: np.ndarray, boxes: np.ndarray, mouth_px: int, grow_px: float,
                margin_px: int = 0) -> MouthLayers:
    """Run the mouth net for frames whose idle layers are `layers` (with meshes idle_landmarks_px) driven by
    `driven_landmarks_px`, and blend its layers into copies of the frames' layers; what the live renderer does,
    in NumPy + torch (for evaluation)."""
    albedo, normals, spec = layers.albedo.copy(), layers.normals.copy(), layers.spec_weight.copy()
    blends = []
    with torch.no_grad():
        for i, (x, y) in enumerate(boxes):
            m = mouth_px
            mask = mouth_region_mask([idle_landmarks_px[i], driven_landmarks_px[i]], (x, y), m, grow_px, margin_px)
            keep = ~mask[..., None]
            cn = mouth_coarse_normals(driven_landmarks_px[i], triangles, (x, y), m)
            a0, n0, s0 = albedo[i, y:y + m, x:x + m], normals[i, y:y + m, x:x + m], spec[i, y:y + m, x:x + m]
            out = net(_chw(cn[None]), _chw((a0 * keep)[None]), _chw((n0 * keep)[None]), _chw(mask[None]))
            a, n, s, b = (o[0].permute(1, 2, 0).numpy() for o in out)
            albedo[i, y:y + m, x:x + m] = b * a + (1 - b) * a0
            nn_ = b * n + (1 - b) * n0
            normals[i, y:y + m, x:x + m] = nn_ / np.maximum(np.linalg.norm(nn_, axis=-1, keepdims=True), 1e-6)
            spec[i, y:y + m, x:x + m] = b[..., 0] * s[..., 0] + (1 - b[..., 0]) * s0
            blends.append(b[..., 0])
    return MouthLayers(albedo, normals, spec, np.stack(blends))


def train_samples_from_model(decomposition: DecompositionModelTorch, crops: np.ndarray, coarse_normals: np.ndarray,
                             matte: np.ndarray, landmarks_px: np.ndarray, triangles: np.ndarray,
                             params: MouthParams) -> MouthSamples:
    """Decompose frames (full resolution, folded albedo as the idle loop gets it) and cut them into mouth samples."""
    layers = frame_layers(decomposition, crops, coarse_normals, matte, fold_residual=True)
    return build_samples(layers, landmarks_px, triangles, crops.shape[1], params)
