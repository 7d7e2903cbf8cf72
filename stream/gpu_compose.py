"""One fused CUDA kernel per frame: decode idle layers + paste the mouth + relight + matte over background + sRGB +
RGB -> I420 / NV12, all on the GPU; plus the NumPy reference it must equal, and the NumPy RGB -> YUV conversion.

Per output pixel (one thread per 2x2 canvas block, so chroma is averaged without a second pass):
  inside the avatar's placement, the four crop texels of its bilinear footprint (stream/compose.resample_axis maps),
  each:
    idle frame i's uint8 layers decoded (sRGB table for albedo, n*127.5+127.5 normals renormalised, C_spec, matte);
    in the mouth box: albedo, normals, C_spec pulled toward the mouth net's outputs by its `blend` (normals
    renormalised), as BundleRenderer._blend_mouth;
    where the matte covers: A * (max(E(N), 0)/pi + C_spec * sum_k c_k (s+2)/(2 pi) max(h_k.N,0)^s max(N.w_k,0))
    (models/render.py's image formation; the SH terms folded with their constants as bundle_renderer.sh_shading);
    encoded by the 14-bit sRGB table of stream/compose.py and premultiplied by the matte;
  interpolated, then over the background's sRGB pixel (stream/compose.composite_scaled, which the CPU Compositor
  also follows);
  outside: the background's sRGB pixel.
  Y per pixel, U/V from the block's mean RGB, BT.601 limited range (below). Optionally the sRGB canvas too.

The analytic shading only: a bundle's learned `shading` net is not fused here (it would run as a net before).

BT.601 limited ("TV") range, the default of H.264/VP8 encoders and what virtual-camera I420 consumers assume, on
8-bit sRGB-encoded R'G'B' in 0..255:
  Y = 16  + ( 65.481 R' + 128.553 G' +  24.966 B') / 255      (16..235)
  U = 128 + (-37.797 R' -  74.203 G' + 112.000 B') / 255      (16..240)
  V = 128 + (112.000 R' -  93.786 G' -  18.214 B') / 255
rounded half up and clipped to 0..255. U and V use the mean R'G'B' of each 2x2 block (co-sited between the four, as
MPEG-2/H.264 4:2:0 with centred chroma in the horizontal direction is approximated by most sinks). I420 = planes
Y (H, W), U (H/2, W/2), V (H/2, W/2); NV12 = Y then one (H/2, W) plane of interleaved U, V.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from models.colour import srgb_to_linear
from models.lighting.lighting import Lighting
from models.lighting.sh import IRRADIANCE_GAIN_PER_COEFF, Y1_CONST, Y2_CROSS_CONST, Y00_CONST, Y20_CONST, Y22_CONST
from models.render import VIEW_DIR
from stream.compose import _LUT_SIZE, _SRGB_LUT, Placement, resample_axis

_Y_ROW = np.array([65.481, 128.553, 24.966]) / 255.0
_U_ROW = np.array([-37.797, -74.203, 112.0]) / 255.0
_V_ROW = np.array([112.0, -93.786, -18.214]) / 255.0


@dataclass(frozen=True)
class YuvFrame:
    """4:2:0 frame: `y` (H, W) and either `u`, `v` (H/2, W/2) planes (I420) or `uv` (H/2, W) interleaved (NV12)."""

    y: np.ndarray
    u: np.ndarray | None = None
    v: np.ndarray | None = None
    uv: np.ndarray | None = None

    @property
    def layout(self) -> str:
        return "nv12" if self.uv is not None else "i420"


def _round_u8(x, xp=np):
    return xp.clip(xp.floor(x + 0.5), 0, 255).astype(xp.uint8)


def _check_even(rgb) -> None:
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.shape[0] % 2 or rgb.shape[1] % 2 or rgb.dtype != np.uint8:
        raise ValueError(f"RGB -> YUV 4:2:0 needs uint8 (H, W, 3) with even H and W, got {rgb.dtype} {rgb.shape}")


def rgb_to_i420(rgb_u8) -> YuvFrame:
    """BT.601 limited-range I420 of an sRGB uint8 (H, W, 3) image (NumPy or CuPy)."""
    from models.xp import array_module

    xp = array_module(rgb_u8)
    _check_even(rgb_u8)
    f = rgb_u8.astype(xp.float32)
    y = _round_u8(16.0 + f @ xp.asarray(_Y_ROW, xp.float32), xp)
    h, w = rgb_u8.shape[:2]
    mean = f.reshape(h // 2, 2, w // 2, 2, 3).mean(axis=(1, 3))
    u = _round_u8(128.0 + mean @ xp.asarray(_U_ROW, xp.float32), xp)
    v = _round_u8(128.0 + mean @ xp.asarray(_V_ROW, xp.float32), xp)
    return YuvFrame(y=y, u=u, v=v)


def i420_to_nv12(frame: YuvFrame) -> YuvFrame:
    from models.xp import array_module

    xp = array_module(frame.y)
    h2, w2 = frame.u.shape
    uv = xp.empty((h2, 2 * w2), dtype=xp.uint8)
    uv[:, 0::2], uv[:, 1::2] = frame.u, frame.v
    return YuvFrame(y=frame.y, uv=uv)


# ------------------------------------------------------------------------------------------ the frame's inputs


@dataclass(frozen=True)
class MouthPatch:
    """The mouth net's outputs for one frame (batch row squeezed), channels first, and where the box sits (crop px)."""

    albedo: np.ndarray  # (3, M, M) linear
    normals: np.ndarray  # (3, M, M) unit
    spec_weight: np.ndarray  # (M, M)
    blend: np.ndarray  # (M, M)
    x_px: int
    y_px: int


@dataclass(frozen=True)
class IdleFrameU8:
    """One idle-loop frame as stored in the bundle (docs/bundle.md encodings)."""

    albedo: np.ndarray  # (S, S, 3) uint8 sRGB
    normals: np.ndarray  # (S, S, 3) uint8, n*127.5+127.5
    spec_weight: np.ndarray  # (S, S) uint8
    matte: np.ndarray  # (S, S) uint8


def folded_sh(sh_coeffs) -> np.ndarray:
    """(9, 3) float32: SH coefficients times irradiance gains, basis constants and 1/pi (bundle_renderer.sh_shading)."""
    consts = np.array([Y00_CONST, Y1_CONST, Y1_CONST, Y1_CONST, Y2_CROSS_CONST, Y2_CROSS_CONST, Y20_CONST,
                       Y2_CROSS_CONST, Y22_CONST])
    k = np.asarray(sh_coeffs, np.float64) * np.asarray(IRRADIANCE_GAIN_PER_COEFF)[:, None] / math.pi
    return (k * consts[:, None]).astype(np.float32)


def half_vectors(light_dirs: np.ndarray) -> np.ndarray:
    """(K, 3) Blinn half vectors normalize(w + v) (0 for a light exactly behind), as models.render.specular."""
    w = np.asarray(light_dirs, np.float32).reshape(-1, 3)
    h = w + np.asarray(VIEW_DIR, np.float32)
    n = np.linalg.norm(h, axis=1, keepdims=True)
    return np.where(n > 1e-6, h / np.maximum(n, 1e-6), 0.0).astype(np.float32)


_SRGB_DECODE = srgb_to_linear(np.arange(256, dtype=np.float32) / 255.0).astype(np.float32)


def avatar_layers_reference(idle: IdleFrameU8, mouth: MouthPatch):
    """Decoded layers with the mouth blended in: (albedo, normals, spec (S,S), matte (S,S)) float32, as the renderer."""
    codes = np.arange(256, dtype=np.float32)
    a = _SRGB_DECODE[idle.albedo]
    n = ((codes - 127.5) / 127.5)[idle.normals]
    n /= np.maximum(np.sqrt(np.einsum("hwc,hwc->hw", n, n)), 1e-6)[..., None]
    c = (codes / 255.0)[idle.spec_weight]
    matte = (codes / 255.0)[idle.matte]
    m = mouth.blend.shape[0]
    box = (slice(mouth.y_px, mouth.y_px + m), slice(mouth.x_px, mouth.x_px + m))
    b = mouth.blend[..., None]
    a[box] += b * (mouth.albedo.transpose(1, 2, 0) - a[box])
    nb = n[box] + b * (mouth.normals.transpose(1, 2, 0) - n[box])
    n[box] = nb / np.maximum(np.linalg.norm(nb, axis=2, keepdims=True), 1e-6)
    c[box] += mouth.blend * (mouth.spec_weight - c[box])
    return a, n, c, matte


def compose_reference(idle: IdleFrameU8, mouth: MouthPatch, lighting: Lighting, shininess: float,
                      background_srgb: np.ndarray, placement: Placement) -> np.ndarray:
    """The NumPy path the fused kernel must equal: sRGB uint8 canvas (H, W, 3)."""
    from stream.bundle_renderer import relight_pixels
    from stream.compose import composite_scaled, encode_srgb_u8

    s = idle.matte.shape[0]
    a, n, c, matte = avatar_layers_reference(idle, mouth)
    on = np.flatnonzero(matte.reshape(-1) > 0)
    rgb = np.zeros((s * s, 3), np.float32)
    rgb[on] = relight_pixels(a.reshape(-1, 3)[on], n.reshape(-1, 3)[on], c.reshape(-1)[on][:, None], lighting,
                             shininess)
    return composite_scaled(encode_srgb_u8(rgb.reshape(s, s, 3)), idle.matte, background_srgb, placement)


# ------------------------------------------------------------------------------------------------ the kernel

_KERNEL = r"""
struct AvatarInputs {
    const unsigned char *idle_albedo, *idle_normals, *idle_spec, *idle_matte;
    int S;
    const float *m_albedo, *m_normals, *m_spec, *m_blend;
    int M, box_x, box_y;
    const float *sh_k, *half_vec, *light_dir, *light_col;
    int K;
    float shininess;
    const float* srgb_decode;
    const unsigned char* srgb_encode;
    int lut_size;
};

// One crop texel, lit, sRGB-encoded (0..255) and premultiplied by its matte: out[0..2]; the matte (0..1): out[3].
__device__ void lit_texel(const AvatarInputs& in, int ax, int ay, float out[4])
{
    const int S = in.S, M = in.M;
    int p = ay * S + ax;
    float alpha = in.idle_matte[p] / 255.0f;
    out[3] = alpha;
    if (alpha <= 0.f) { out[0] = out[1] = out[2] = 0.f; return; }
    float a[3], n[3];
    for (int c = 0; c < 3; ++c) {
        a[c] = in.srgb_decode[in.idle_albedo[3 * p + c]];
        n[c] = ((float)in.idle_normals[3 * p + c] - 127.5f) / 127.5f;
    }
    float len = fmaxf(sqrtf(n[0] * n[0] + n[1] * n[1] + n[2] * n[2]), 1e-6f);
    for (int c = 0; c < 3; ++c) n[c] /= len;
    float cs = in.idle_spec[p] / 255.0f;
    int mx = ax - in.box_x, my = ay - in.box_y;
    if (mx >= 0 && my >= 0 && mx < M && my < M) {
        int mp = my * M + mx;
        float b = in.m_blend[mp];
        for (int c = 0; c < 3; ++c) {
            a[c] += b * (in.m_albedo[c * M * M + mp] - a[c]);
            n[c] += b * (in.m_normals[c * M * M + mp] - n[c]);
        }
        len = fmaxf(sqrtf(n[0] * n[0] + n[1] * n[1] + n[2] * n[2]), 1e-6f);
        for (int c = 0; c < 3; ++c) n[c] /= len;
        cs += b * (in.m_spec[mp] - cs);
    }
    const float lobe = (in.shininess + 2.0f) / (2.0f * 3.14159265358979f);
    float X = n[0], Y = n[1], Z = n[2];
    float basis[9] = {1.f, Y, Z, X, X * Y, Y * Z, 3.f * Z * Z - 1.f, X * Z, X * X - Y * Y};
    float spec[3] = {0.f, 0.f, 0.f};
    for (int k = 0; k < in.K; ++k) {
        const float* h = in.half_vec + 3 * k;
        const float* w = in.light_dir + 3 * k;
        float nh = fmaxf(X * h[0] + Y * h[1] + Z * h[2], 0.f);
        float nw = fmaxf(X * w[0] + Y * w[1] + Z * w[2], 0.f);
        float g = lobe * powf(nh, in.shininess) * nw;
        for (int c = 0; c < 3; ++c) spec[c] += g * in.light_col[3 * k + c];
    }
    for (int c = 0; c < 3; ++c) {
        float e = 0.f;
        for (int j = 0; j < 9; ++j) e += basis[j] * in.sh_k[3 * j + c];
        float v = fminf(fmaxf(a[c] * (fmaxf(e, 0.f) + cs * spec[c]), 0.f), 1.f);
        out[c] = (float)in.srgb_encode[(int)(v * (in.lut_size - 1) + 0.5f)] * alpha;
    }
}

extern "C" __global__ void relit_frame(
    const unsigned char* idle_albedo, const unsigned char* idle_normals,
    const unsigned char* idle_spec, const unsigned char* idle_matte, int S,
    const float* m_albedo, const float* m_normals, const float* m_spec, const float* m_blend,
    int M, int box_x, int box_y,
    const float* sh_k, const float* half_vec, const float* light_dir, const float* light_col, int K,
    float shininess,
    const float* srgb_decode, const unsigned char* srgb_encode, int lut_size,
    const unsigned char* bg_srgb, int W, int H,
    int place_x, int place_y, int place_w, int place_h,
    const int* row_lo, const int* row_hi, const float* row_w,
    const int* col_lo, const int* col_hi, const float* col_w,
    unsigned char* out_rgb, unsigned char* out_y, unsigned char* out_u, unsigned char* out_v,
    unsigned char* out_uv)
{
    int bx = blockIdx.x * blockDim.x + threadIdx.x;
    int by = blockIdx.y * blockDim.y + threadIdx.y;
    if (bx >= W / 2 || by >= H / 2) return;
    AvatarInputs in = {idle_albedo, idle_normals, idle_spec, idle_matte, S, m_albedo, m_normals, m_spec, m_blend,
                       M, box_x, box_y, sh_k, half_vec, light_dir, light_col, K, shininess, srgb_decode,
                       srgb_encode, lut_size};
    float sum_r = 0.f, sum_g = 0.f, sum_b = 0.f;
    for (int q = 0; q < 4; ++q) {
        int x = 2 * bx + (q & 1), y = 2 * by + (q >> 1);
        int o = y * W + x;
        float rgb8[3];
        int lx = x - place_x, ly = y - place_y;
        if (lx >= 0 && ly >= 0 && lx < place_w && ly < place_h) {
            float t00[4], t01[4], t10[4], t11[4];
            lit_texel(in, col_lo[lx], row_lo[ly], t00);
            lit_texel(in, col_hi[lx], row_lo[ly], t01);
            lit_texel(in, col_lo[lx], row_hi[ly], t10);
            lit_texel(in, col_hi[lx], row_hi[ly], t11);
            float wy = row_w[ly], wx = col_w[lx], v[4];
            // Rows first, then columns: the order of stream/compose.resample.
            for (int c = 0; c < 4; ++c) {
                float left = t00[c] + wy * (t10[c] - t00[c]);
                float right = t01[c] + wy * (t11[c] - t01[c]);
                v[c] = left + wx * (right - left);
            }
            for (int c = 0; c < 3; ++c) {
                float over = v[c] + (float)bg_srgb[3 * o + c] * (1.f - v[3]);
                rgb8[c] = fminf(fmaxf(floorf(over + 0.5f), 0.f), 255.f);
            }
        } else {
            for (int c = 0; c < 3; ++c) rgb8[c] = (float)bg_srgb[3 * o + c];
        }
        if (out_rgb) for (int c = 0; c < 3; ++c) out_rgb[3 * o + c] = (unsigned char)rgb8[c];
        float yv = 16.f + (65.481f * rgb8[0] + 128.553f * rgb8[1] + 24.966f * rgb8[2]) / 255.f;
        out_y[o] = (unsigned char)fminf(fmaxf(floorf(yv + 0.5f), 0.f), 255.f);
        sum_r += rgb8[0]; sum_g += rgb8[1]; sum_b += rgb8[2];
    }
    float r = 0.25f * sum_r, g = 0.25f * sum_g, b = 0.25f * sum_b;
    float u = 128.f + (-37.797f * r - 74.203f * g + 112.f * b) / 255.f;
    float v = 128.f + (112.f * r - 93.786f * g - 18.214f * b) / 255.f;
    unsigned char u8 = (unsigned char)fminf(fmaxf(floorf(u + 0.5f), 0.f), 255.f);
    unsigned char v8 = (unsigned char)fminf(fmaxf(floorf(v + 0.5f), 0.f), 255.f);
    if (out_uv) {
        out_uv[by * W + 2 * bx] = u8;
        out_uv[by * W + 2 * bx + 1] = v8;
    } else {
        out_u[by * (W / 2) + bx] = u8;
        out_v[by * (W / 2) + bx] = v8;
    }
}
"""


class FusedComposer:
    """The fused frame kernel for one avatar size, canvas and placement. Device (CuPy) in, device out."""

    BLOCK = (16, 8, 1)

    def __init__(self, avatar_size_px: int, canvas_size_px: tuple[int, int], placement: Placement) -> None:
        import cupy as cp

        w, h = canvas_size_px
        if w % 2 or h % 2:
            raise ValueError(f"canvas size must be even for 4:2:0, got {w}x{h}")
        self.cp = cp
        self.s, self.w, self.h = int(avatar_size_px), int(w), int(h)
        self.placement = placement
        rows = resample_axis(self.s, placement.height_px)
        cols = resample_axis(self.s, placement.width_px)
        self._maps = tuple(cp.asarray(v) for v in (rows.lo, rows.hi, rows.weight, cols.lo, cols.hi, cols.weight))
        self._decode = cp.asarray(_SRGB_DECODE)
        self._encode = cp.asarray(_SRGB_LUT)
        self._kernel = cp.RawKernel(_KERNEL, "relit_frame")

    def process(self, idle: IdleFrameU8, mouth: MouthPatch, lighting: Lighting, shininess: float,
                background_srgb, *, layout: str = "i420", want_rgb: bool = False):
        """(YuvFrame of CuPy planes, sRGB canvas (H, W, 3) CuPy or None). Inputs may be NumPy (uploaded) or CuPy."""
        cp = self.cp
        if layout not in ("i420", "nv12"):
            raise ValueError(f"layout must be 'i420' or 'nv12', got {layout!r}")
        s, w, h = self.s, self.w, self.h
        m = int(mouth.blend.shape[0])

        def dev(a, dtype):
            return cp.ascontiguousarray(cp.asarray(a, dtype=dtype))

        k = len(lighting.light_dirs)
        y = cp.empty((h, w), cp.uint8)
        u = v = uv = None
        if layout == "i420":
            u, v = cp.empty((h // 2, w // 2), cp.uint8), cp.empty((h // 2, w // 2), cp.uint8)
        else:
            uv = cp.empty((h // 2, w), cp.uint8)
        rgb = cp.empty((h, w, 3), cp.uint8) if want_rgb else None
        p = self.placement
        args = (
            dev(idle.albedo, cp.uint8), dev(idle.normals, cp.uint8), dev(idle.spec_weight, cp.uint8),
            dev(idle.matte, cp.uint8), np.int32(s),
            dev(mouth.albedo, cp.float32), dev(mouth.normals, cp.float32), dev(mouth.spec_weight, cp.float32),
            dev(mouth.blend, cp.float32), np.int32(m), np.int32(mouth.x_px), np.int32(mouth.y_px),
            dev(folded_sh(lighting.sh_coeffs), cp.float32),
            dev(half_vectors(lighting.light_dirs) if k else np.zeros((1, 3)), cp.float32),
            dev(lighting.light_dirs if k else np.zeros((1, 3)), cp.float32),
            dev(lighting.light_colours if k else np.zeros((1, 3)), cp.float32), np.int32(k),
            np.float32(shininess), self._decode, self._encode, np.int32(_LUT_SIZE),
            dev(background_srgb, cp.uint8), np.int32(w), np.int32(h),
            np.int32(p.x_px), np.int32(p.y_px), np.int32(p.width_px), np.int32(p.height_px), *self._maps,
            # A null pointer (np.uintp(0)) for the outputs not asked for; the kernel tests them.
            rgb if rgb is not None else np.uintp(0), y, u if u is not None else np.uintp(0),
            v if v is not None else np.uintp(0), uv if uv is not None else np.uintp(0),
        )
        bx, by, _ = self.BLOCK
        grid = ((w // 2 + bx - 1) // bx, (h // 2 + by - 1) // by, 1)
        self._kernel(grid, self.BLOCK, args)
        return YuvFrame(y=y, u=u, v=v, uv=uv), rgb
