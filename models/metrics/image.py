"""Per-frame image fidelity: PSNR, SSIM (full frame or inside a mask), PSNR of gradients, normal angular error.

All functions take NumPy arrays of identical shape, (H, W) or (H, W, C), and an optional boolean mask (H, W) that
selects the pixels that count. Values are compared on the scale given by `max_value` (255 for uint8 frames).
PSNR of identical images is +inf; callers that need finite numbers (JSON) cap it themselves.
"""

from __future__ import annotations

import numpy as np

PSNR_CAP_DB = 100.0  # what reports write for identical images (MSE 0); 100 dB is far beyond any real error


def _check_pair(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred, gt = np.asarray(pred), np.asarray(gt)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction is {pred.shape} but ground truth is {gt.shape}; sizes must match")
    if pred.ndim not in (2, 3):
        raise ValueError(f"expected an image (H, W) or (H, W, C), got shape {pred.shape}")
    return pred.astype(np.float64), gt.astype(np.float64)


def _check_mask(mask: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray | None:
    if mask is None:
        return None
    mask = np.asarray(mask)
    if mask.ndim == 3:  # a mask saved as an RGB image
        mask = mask[..., 0]
    if mask.shape != tuple(shape[:2]):
        raise ValueError(f"mask is {mask.shape} but images are {tuple(shape[:2])}; sizes must match")
    mask = mask > (127 if mask.dtype == np.uint8 else 0.5)
    if not mask.any():
        raise ValueError("mask selects no pixels")
    return mask


def mse(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Mean squared error over all channels of the (masked) pixels."""
    pred, gt = _check_pair(pred, gt)
    mask = _check_mask(mask, pred.shape)
    sq = (pred - gt) ** 2
    return float(sq.mean() if mask is None else sq[mask].mean())


def psnr_from_mse(mse_value: float, max_value: float = 255.0) -> float:
    if mse_value <= 0:
        return float("inf")
    return float(10.0 * np.log10(max_value**2 / mse_value))


def psnr_db(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray | None = None, max_value: float = 255.0) -> float:
    """Peak signal-to-noise ratio in dB over the (masked) pixels; +inf when they are identical."""
    return psnr_from_mse(mse(pred, gt, mask), max_value)


def ssim_map(pred: np.ndarray, gt: np.ndarray, max_value: float = 255.0) -> np.ndarray:
    """Per-pixel SSIM (H, W), averaged over channels (skimage, 7x7 uniform window, Wang et al. constants)."""
    from skimage.metrics import structural_similarity

    pred, gt = _check_pair(pred, gt)
    if min(pred.shape[:2]) < 7:
        raise ValueError(f"SSIM needs images of at least 7x7 px, got {pred.shape[1]}x{pred.shape[0]}")
    channel_axis = -1 if pred.ndim == 3 else None
    _, full = structural_similarity(pred, gt, data_range=max_value, channel_axis=channel_axis, full=True)
    return full.mean(axis=-1) if pred.ndim == 3 else full


def ssim(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray | None = None, max_value: float = 255.0) -> float:
    """Mean SSIM over the frame, or over the mask (mean of the SSIM map inside it)."""
    full = ssim_map(pred, gt, max_value)
    mask = _check_mask(mask, full.shape)
    return float(full.mean() if mask is None else full[mask].mean())


def image_gradients(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Forward differences along x and y, cropped to the common (H-1, W-1) area."""
    image = np.asarray(image, dtype=np.float64)
    dx = image[:-1, 1:] - image[:-1, :-1]
    dy = image[1:, :-1] - image[:-1, :-1]
    return dx, dy


def psnr_grad_db(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray | None = None, max_value: float = 255.0) -> float:
    """PSNR of image gradients (ReliTalk's PSNR_grad, used on normal maps): detail agreement, blind to offsets.

    Both images' x and y forward differences are compared; the peak is `max_value`, as for plain PSNR, so the two
    numbers are on the same scale. A mask keeps gradients whose pixel and both neighbours lie inside it.
    """
    pred, gt = _check_pair(pred, gt)
    mask = _check_mask(mask, pred.shape)
    if min(pred.shape[:2]) < 2:
        raise ValueError(f"gradients need images of at least 2x2 px, got {pred.shape[1]}x{pred.shape[0]}")
    (pdx, pdy), (gdx, gdy) = image_gradients(pred), image_gradients(gt)
    sq = (pdx - gdx) ** 2 + (pdy - gdy) ** 2  # summed over the two directions, averaged below
    if mask is None:
        return psnr_from_mse(float(sq.mean() / 2), max_value)
    inner = mask[:-1, :-1] & mask[:-1, 1:] & mask[1:, :-1]
    if not inner.any():
        raise ValueError("mask has no pixel whose right and lower neighbours are also inside it")
    return psnr_from_mse(float(sq[inner].mean() / 2), max_value)


def decode_normal_map(image: np.ndarray) -> np.ndarray:
    """Unit normals (H, W, 3) float64 from a stored normal map: uint8 maps hold (n + 1) / 2 * 255; floats pass."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] < 3:
        raise ValueError(f"a normal map must be (H, W, 3), got shape {image.shape}")
    normals = image[..., :3].astype(np.float64)
    if image.dtype == np.uint8:
        normals = normals / 127.5 - 1.0
    elif image.dtype == np.uint16:
        normals = normals / 32767.5 - 1.0
    return normals


def normal_angular_error_deg(
    pred_normals: np.ndarray, gt_normals: np.ndarray, mask: np.ndarray | None = None
) -> float:
    """Mean angle in degrees between predicted and true normals (H, W, 3), over the mask and valid GT pixels.

    Inputs are renormalised, so slightly off-unit normals (from 8-bit storage) do not bias the angle; GT pixels
    with near-zero length (background in many renderers) carry no normal and are skipped.
    """
    pred, gt = _check_pair(decode_normal_map(pred_normals), decode_normal_map(gt_normals))
    mask = _check_mask(mask, pred.shape)
    pred_len = np.linalg.norm(pred, axis=-1)
    gt_len = np.linalg.norm(gt, axis=-1)
    valid = (gt_len > 1e-3) & (pred_len > 1e-6)
    if mask is not None:
        valid &= mask
    if not valid.any():
        raise ValueError("no pixel has a ground-truth normal (inside the mask)")
    cos = np.sum(pred[valid] * gt[valid], axis=-1) / (pred_len[valid] * gt_len[valid])
    return float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))).mean())
