"""Face identity embedding: dlib's ResNet read from its .dat file into torch, the chip alignment from the mesh."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from models.face.identity import (
    CHIP_PX,
    CHIP_TEMPLATE,
    SAME_PERSON_DISTANCE,
    TEMPLATE_VERTICES,
    DlibFaceResNet,
    chip_affine_from_mesh,
    fit_similarity,
    model_path,
    read_dlib_resnet,
    sample_chips,
)

pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def net() -> DlibFaceResNet:
    return DlibFaceResNet.load()


def _astronaut_chip() -> np.ndarray:
    from skimage import data
    from skimage.transform import resize

    return (resize(data.astronaut()[0:220, 120:340], (CHIP_PX, CHIP_PX), anti_aliasing=True) * 255).astype(np.uint8)


def _embed(net: DlibFaceResNet, chip_u8: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return net(torch.from_numpy(chip_u8).permute(2, 0, 1)[None].float() / 255.0)[0].numpy()


def test_reader_finds_the_whole_network():
    w = read_dlib_resnet(model_path())
    assert len(w.convs) == 29 and len(w.affines) == 29
    assert w.convs[0][0].shape == (32, 3, 7, 7) and w.convs[0][2] == 2
    assert w.fc.shape == (128, 256)
    # dlib's channel means (RGB, 0..255) of its training chips.
    assert np.allclose(w.channel_means, [122.78, 117.00, 104.30], atol=0.01)


def test_torch_port_matches_dlib_itself(net):
    import dlib  # the test extra installs dlib-bin
    chip = _astronaut_chip()
    reference = np.array(dlib.face_recognition_model_v1(str(model_path())).compute_face_descriptor(chip))
    ours = _embed(net, chip)
    assert np.abs(ours - reference).max() < 1e-4
    mirrored = np.array(dlib.face_recognition_model_v1(str(model_path())).compute_face_descriptor(
        np.ascontiguousarray(chip[:, ::-1])))
    assert np.abs(_embed(net, np.ascontiguousarray(chip[:, ::-1])) - mirrored).max() < 1e-4


def test_embedding_keeps_a_face_under_a_lighting_change_and_moves_for_another_picture(net):
    from skimage import data
    from skimage.transform import resize

    chip = _astronaut_chip()
    darker = np.clip(chip.astype(np.float32) * 0.7, 0, 255).astype(np.uint8)
    coffee = (resize(data.coffee(), (CHIP_PX, CHIP_PX), anti_aliasing=True) * 255).astype(np.uint8)
    e, e_dark, e_other = _embed(net, chip), _embed(net, darker), _embed(net, coffee)
    # The same face 30 % darker stays well inside dlib's same-person distance; a picture of a cup lands far off.
    assert np.linalg.norm(e - e_dark) < 0.25 * SAME_PERSON_DISTANCE
    assert np.linalg.norm(e - e_other) > 4 * np.linalg.norm(e - e_dark)


def test_truncated_or_foreign_file_is_refused(tmp_path):
    data = model_path().read_bytes()
    cut = tmp_path / "cut.dat"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="no 'con_4' layer|truncated|no 'fc_2'"):
        read_dlib_resnet(cut)
    # Cut right after the first conv layer's name: the stream ends where an integer should be.
    at = data.find(b"con_4") + len(b"con_4")
    cut.write_bytes(data[:at])
    with pytest.raises(ValueError, match="truncated"):
        read_dlib_resnet(cut)
    other = tmp_path / "other.dat"
    other.write_bytes(b"\x01\x0aloss_mmod_" + bytes(100))
    with pytest.raises(ValueError, match="input_rgb_image_sized"):
        read_dlib_resnet(other)


def test_fit_similarity_recovers_a_known_transform():
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 100, (7, 2))
    a, s = math.radians(12.0), 1.7
    truth = np.array([[s * math.cos(a), -s * math.sin(a), 5.0], [s * math.sin(a), s * math.cos(a), -3.0]])
    fitted = fit_similarity(src, src @ truth[:, :2].T + truth[:, 2])
    assert np.allclose(fitted, truth, atol=1e-9)
    with pytest.raises(ValueError):
        fit_similarity(np.ones((3, 2)), np.zeros((3, 2)))


def test_chip_affine_puts_the_template_vertices_on_the_template():
    landmarks = np.zeros((468, 3))
    # An image where the template vertices are the template itself scaled by 2, turned 10 degrees and shifted.
    a = math.radians(10.0)
    rot = 2.0 * np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    landmarks[TEMPLATE_VERTICES, :2] = CHIP_TEMPLATE @ rot.T + [40.0, 25.0]
    m = chip_affine_from_mesh(landmarks)
    mapped = landmarks[TEMPLATE_VERTICES, :2] @ m[:, :2].T + m[:, 2]
    assert np.allclose(mapped, CHIP_TEMPLATE, atol=1e-9)


def test_sample_chips_follows_the_affine_and_passes_gradients():
    rng = np.random.default_rng(1)
    image = torch.from_numpy(rng.uniform(0, 1, (1, 3, CHIP_PX, CHIP_PX)).astype(np.float32)).requires_grad_(True)
    identity = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]])
    assert torch.allclose(sample_chips(image, identity), image, atol=1e-4)
    # A 2x larger image seen through a halving affine: chip pixel (u, v) is image pixel centre (2u, 2v) -> average.
    big = torch.from_numpy(np.repeat(np.repeat(image.detach().numpy(), 2, axis=2), 2, axis=3))
    half = torch.tensor([[[0.5, 0.0, 0.0], [0.0, 0.5, 0.0]]])
    assert torch.allclose(sample_chips(big, half), image.detach(), atol=1e-4)
    sample_chips(image, identity).sum().backward()
    assert image.grad is not None and float(image.grad.abs().sum()) > 0


def _script(name: str):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_chip_template_agrees_with_dlibs_own_aligner_on_the_astronaut():
    from skimage import data

    calibrate = _script("calibrate_identity_chip")
    positions, mismatches = calibrate.measure([("astronaut", data.astronaut())])
    assert len(positions) == 1
    # The matrix derived from dlib's chip_details resamples the image like dlib's own chip (nearest vs bilinear).
    assert mismatches[0] < 8.0
    a = fit_similarity(positions[0], CHIP_TEMPLATE)
    landed = positions[0] @ a[:, :2].T + a[:, 2]
    assert np.linalg.norm(landed - CHIP_TEMPLATE, axis=1).mean() < 2.0
    assert abs(math.hypot(*a[:, 0]) - 1.0) < 0.05  # same scale as dlib's chip


def test_face_embeddings_of_a_portrait_and_bad_input():
    from skimage import data

    from models.metrics.identity import embedding_distances, face_embeddings
    from models.synth.head import fit_landmarks

    img = data.astronaut()
    pts = fit_landmarks(img, "astronaut").points_px
    darker = np.clip(img.astype(np.float32) * 0.6, 0, 255).astype(np.uint8)
    e = face_embeddings(np.stack([img, darker]), np.stack([pts, pts]))
    assert e.shape == (2, 128)
    assert embedding_distances(e[:1], e[1:])[0] < 0.25 * SAME_PERSON_DISTANCE
    with pytest.raises(ValueError, match="uint8"):
        face_embeddings(img[None].astype(np.float32), pts[None])
    with pytest.raises(ValueError, match="1 images but 2 meshes"):
        face_embeddings(img[None], np.stack([pts, pts]))
