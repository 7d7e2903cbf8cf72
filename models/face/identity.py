"""Face identity embedding: dlib's 128-D face-recognition ResNet (CC0, shipped in the `face_recognition_models`
package on PyPI), read from its .dat file into a torch module so a loss can backpropagate through it.

The .dat file is dlib's own serialisation of the network (loss_metric over a ResNet of 29 conv layers on a 150 x 150
RGB face chip). `read_dlib_resnet` walks the stream layer by layer (input first, as dlib writes the innermost
sub-network first) and keeps what the forward pass needs: the input's channel means, and every conv, affine
(frozen batch norm), pooling and fully connected layer with its parameters. The architecture itself is fixed
below (`DlibFaceResNet`) and the reader checks each layer's shape against it, so a different .dat file is refused
rather than silently misread.

Two embeddings of the same person are closer than `SAME_PERSON_DISTANCE` (Euclidean), dlib's own threshold (99.38 %
on LFW by dlib's report).

The chip: `chip_affine_from_mesh` maps image pixels to the 150 x 150 chip from the 468-point mesh, placing five of
its vertices where dlib's own aligner puts those points (`CHIP_TEMPLATE`, measured once by
scripts/calibrate_identity_chip.py against dlib's 5-point aligner).
"""

from __future__ import annotations

import importlib.util
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

CHIP_PX = 150
SAME_PERSON_DISTANCE = 0.6
MODEL_NAME = "dlib_face_recognition_resnet_model_v1.dat"

# (conv out channels, stride) of the residual blocks from the input on; a stride-2 block pools its shortcut
# (dlib's ares_down), and the shortcut is zero-padded to the block's channels and size (dlib's add_prev).
RESIDUAL_BLOCKS = ((32, 1), (32, 1), (32, 1),
                   (64, 2), (64, 1), (64, 1), (64, 1),
                   (128, 2), (128, 1), (128, 1),
                   (256, 2), (256, 1), (256, 1),
                   (256, 2))
EMBEDDING_DIM = 128

# Face-mesh vertices that fix the chip (none moves with speech): outer and inner eye corners (subject's right, then
# left) and the nose base, close to the five points dlib's own aligner uses.
TEMPLATE_VERTICES = np.array([33, 133, 362, 263, 2])
# Where dlib's aligner (5-point shape, padding 0.25, as compute_face_descriptor) puts those vertices in its chip (px,
# pixel centres at +0.5): the median over 21 images (the astronaut portrait, 10 frames of talking_obama_24s.mp4,
# 10 of a synthetic clip); a similarity fit lands each image within 0.95 px of it on average.
CHIP_TEMPLATE = np.array([(34.93, 45.82), (59.04, 47.76), (88.66, 48.11), (112.93, 46.00), (74.31, 86.06)])


def model_path() -> Path:
    """The .dat file inside the installed `face_recognition_models` package; ValueError naming the fix if absent."""
    # find_spec, not import: the package's __init__ needs pkg_resources, which new setuptools no longer has.
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or spec.origin is None:
        raise ValueError("the face identity model needs the `face_recognition_models` package "
                         "(pip install face_recognition_models; it ships dlib's CC0 weights)")
    path = Path(spec.origin).parent / "models" / MODEL_NAME
    if not path.is_file():
        raise ValueError(f"{path} is missing from the face_recognition_models package; reinstall it")
    return path


class _Stream:
    """dlib's serialisation primitives over a bytes buffer."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def int(self) -> int:
        # One control byte (low nibble: byte count, bit 7: sign), then the magnitude little-endian.
        if self.pos >= len(self.data):
            raise ValueError("dlib stream ends inside a layer: truncated file")
        control = self.data[self.pos]
        n = control & 0x0F
        if n > 8 or self.pos + 1 + n > len(self.data):
            raise ValueError(f"corrupt or truncated dlib stream at byte {self.pos}: integer of {n} bytes")
        value = int.from_bytes(self.data[self.pos + 1:self.pos + 1 + n], "little")
        self.pos += 1 + n
        return -value if control & 0x80 else value

    def float(self) -> float:
        # Mantissa and exponent as two integers: value = mantissa * 2**exponent (no special values needed here).
        mantissa, exponent = self.int(), self.int()
        return float(mantissa) * 2.0 ** exponent

    def tensor(self) -> np.ndarray:
        version = self.int()
        if version != 2:
            raise ValueError(f"unsupported dlib tensor version {version} at byte {self.pos}")
        n, k, nr, nc = self.int(), self.int(), self.int(), self.int()
        count = n * k * nr * nc
        end = self.pos + 4 * count
        if end > len(self.data):
            raise ValueError("dlib stream ends inside a tensor: truncated file")
        values = np.frombuffer(self.data, dtype="<f4", count=count, offset=self.pos)
        self.pos = end
        return values.reshape(n, k, nr, nc)

    def seek_string(self, name: str) -> None:
        """Move to just past the next serialised string `name` (its length byte and characters)."""
        raw = name.encode("latin-1")
        marker = struct.pack("BB", 0x01, len(raw)) + raw
        at = self.data.find(marker, self.pos)
        if at < 0:
            raise ValueError(f"dlib stream has no {name!r} layer after byte {self.pos}")
        self.pos = at + len(marker)


@dataclass(frozen=True)
class DlibWeights:
    channel_means: np.ndarray  # (3,) RGB, 0..255
    convs: list[tuple[np.ndarray, np.ndarray, int, int]]  # (weight OIHW, bias, stride, padding), input first
    affines: list[tuple[np.ndarray, np.ndarray]]  # (gamma, beta) per conv
    fc: np.ndarray  # (EMBEDDING_DIM, 256): out = fc @ x


def read_dlib_resnet(path: Path) -> DlibWeights:
    """Parameters of dlib's face-recognition ResNet from its .dat file, checked against `RESIDUAL_BLOCKS`."""
    s = _Stream(Path(path).read_bytes())
    s.seek_string("input_rgb_image_sized")
    means = np.array([s.float(), s.float(), s.float()], np.float32)
    chip = (s.int(), s.int())
    if chip != (CHIP_PX, CHIP_PX):
        raise ValueError(f"{path}: expected a {CHIP_PX}x{CHIP_PX} input, found {chip}")
    convs, affines = [], []
    expected_out = [32] + [c for c, _ in RESIDUAL_BLOCKS for _ in (0, 1)]
    in_ch = 3
    for i, out_ch in enumerate(expected_out):
        s.seek_string("con_4")
        params = s.tensor().ravel()
        n_filters, nr, nc, stride_y, stride_x, pad_y, pad_x = (s.int() for _ in range(7))
        if n_filters != out_ch or nr != nc or stride_y != stride_x or pad_y != pad_x:
            raise ValueError(f"{path}: conv {i} is {n_filters} filters {nr}x{nc} stride {stride_y}/{stride_x}, "
                             f"not the expected {out_ch} square filters")
        n_weights = out_ch * in_ch * nr * nc
        if params.size != n_weights + out_ch:
            raise ValueError(f"{path}: conv {i} holds {params.size} values, expected {n_weights + out_ch}")
        convs.append((params[:n_weights].reshape(out_ch, in_ch, nr, nc).copy(), params[n_weights:].copy(),
                      stride_y, pad_y))
        s.seek_string("affine_")
        gb = s.tensor().ravel()
        if gb.size != 2 * out_ch:
            raise ValueError(f"{path}: affine {i} holds {gb.size} values, expected {2 * out_ch}")
        affines.append((gb[:out_ch].copy(), gb[out_ch:].copy()))
        in_ch = out_ch
    s.seek_string("fc_2")
    n_out, n_in = s.int(), s.int()
    w = s.tensor().ravel()
    if (n_out, n_in) != (EMBEDDING_DIM, in_ch) or w.size != n_in * n_out:
        raise ValueError(f"{path}: fully connected layer {n_in} -> {n_out}, expected {in_ch} -> {EMBEDDING_DIM}")
    fc = w.reshape(n_in, n_out).T.copy()  # dlib stores (inputs, outputs) and computes x @ W
    return DlibWeights(means, convs, affines, fc)


def _add_padded(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a + b where missing channels / rows / columns of the smaller count as 0 (dlib's add_prev)."""
    shape = [max(x, y) for x, y in zip(a.shape, b.shape)]

    def grow(t: torch.Tensor) -> torch.Tensor:
        pad = [0, shape[3] - t.shape[3], 0, shape[2] - t.shape[2], 0, shape[1] - t.shape[1]]
        return F.pad(t, pad) if any(pad) else t

    return grow(a) + grow(b)


class DlibFaceResNet(torch.nn.Module):
    """dlib's face-recognition ResNet in torch: (B, 3, 150, 150) RGB in 0..1 -> (B, 128) embeddings."""

    def __init__(self, weights: DlibWeights) -> None:
        super().__init__()
        self.register_buffer("means", torch.from_numpy(weights.channel_means / 255.0).view(1, 3, 1, 1))
        self.convs = torch.nn.ModuleList()
        for (w, b, stride, pad), (gamma, beta) in zip(weights.convs, weights.affines):
            conv = torch.nn.Conv2d(w.shape[1], w.shape[0], w.shape[2], stride=stride, padding=pad)
            with torch.no_grad():
                # The frozen batch norm folds into the conv: gamma * (conv(x) + b) + beta.
                conv.weight.copy_(torch.from_numpy(w * gamma[:, None, None, None]))
                conv.bias.copy_(torch.from_numpy(b * gamma + beta))
            self.convs.append(conv)
        self.register_buffer("fc", torch.from_numpy(weights.fc))
        self.requires_grad_(False)

    @classmethod
    def load(cls, path: Path | None = None) -> "DlibFaceResNet":
        return cls(read_dlib_resnet(path or model_path())).eval()

    def _stem(self, images: torch.Tensor) -> torch.Tensor:
        # dlib scales pixels to (v - mean) / 256 on the 0..255 scale.
        return F.relu(self.convs[0]((images - self.means) * (255.0 / 256.0)))

    def _block(self, i: int, x: torch.Tensor) -> torch.Tensor:
        first, second = self.convs[1 + 2 * i], self.convs[2 + 2 * i]
        y = second(F.relu(first(x)))
        shortcut = F.avg_pool2d(x, 2, 2) if RESIDUAL_BLOCKS[i][1] == 2 else x
        return F.relu(_add_padded(y, shortcut))

    def forward(self, chips: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(self._stem(chips), 3, 2)
        for i in range(len(RESIDUAL_BLOCKS)):
            x = self._block(i, x)
        return x.mean(dim=(2, 3)) @ self.fc.T

    def features(self, images: torch.Tensor, blocks: int = 3) -> list[torch.Tensor]:
        """Early activations for a perceptual loss on (B, 3, H, W) sRGB images in 0..1 of any size: the stem's
        (H/2, 32 channels) and, after the max pool, those of the first `blocks` residual blocks (H/4; 32 channels
        for the first three). Face-trained filters: edges, lips, teeth, skin texture."""
        x = self._stem(images)
        out = [x]
        x = F.max_pool2d(x, 3, 2)
        for i in range(blocks):
            x = self._block(i, x)
            out.append(x)
        return out


def fit_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """2x3 least-squares similarity (rotation, uniform scale, shift) taking points src (N, 2) onto dst (N, 2)."""
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    ms, md = src.mean(0), dst.mean(0)
    a, b = src - ms, dst - md
    denom = float((a ** 2).sum())
    if denom < 1e-12:
        raise ValueError("similarity fit needs points that are not all the same")
    p = float((a * b).sum()) / denom
    q = float((a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0]).sum()) / denom
    rot = np.array([[p, -q], [q, p]])
    return np.c_[rot, md - rot @ ms]


def chip_affine_from_mesh(landmarks_px: np.ndarray) -> np.ndarray:
    """2x3 affine taking image pixels (where `landmarks_px` (468, 2+) live) to the identity chip's pixels."""
    return fit_similarity(np.asarray(landmarks_px)[TEMPLATE_VERTICES, :2], CHIP_TEMPLATE)


def sample_chips(images: torch.Tensor, image_to_chip: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) images and (B, 2, 3) image->chip affines (pixel centres at +0.5) -> (B, 3, 150, 150) chips,
    bilinear and differentiable in the images."""
    b, _, h, w = images.shape
    full = torch.cat([image_to_chip, image_to_chip.new_tensor([0.0, 0.0, 1.0]).expand(b, 1, 3)], dim=1)
    chip_to_image = torch.linalg.inv(full)[:, :2]
    # grid_sample's normalised coordinates (align_corners=False): pixel centre u -> (2u / size) - 1.
    to_chip_px = image_to_chip.new_tensor([[CHIP_PX / 2.0, 0.0, CHIP_PX / 2.0], [0.0, CHIP_PX / 2.0, CHIP_PX / 2.0],
                                           [0.0, 0.0, 1.0]])
    from_image_px = image_to_chip.new_tensor([[2.0 / w, 0.0, -1.0], [0.0, 2.0 / h, -1.0]])
    theta = from_image_px @ torch.cat([chip_to_image, full[:, 2:]], dim=1) @ to_chip_px
    grid = F.affine_grid(theta, (b, 3, CHIP_PX, CHIP_PX), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
