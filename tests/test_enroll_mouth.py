"""Mouth stage: box and mask geometry, the open mouth as a zero hole in the coarse normals, training and pasting."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.enroll.decompose import DecomposeParams, DecompositionModelTorch, LayerStack
from models.enroll.expression import lip_region
from models.enroll.mouth import (
    MouthParams,
    build_samples,
    load_mouth,
    mouth_box,
    mouth_coarse_normals,
    mouth_region_mask,
    paste_mouth,
    random_lighting,
    train_mouth,
)
from models.enroll.workdir import WorkDir
from models.face.resources import load_canonical_face, load_topology

S = 64
UPPER_INNER, LOWER_INNER = 13, 14  # inner-lip midpoints of the 468-point mesh


pytestmark = pytest.mark.usefixtures("torch_one_thread")


def _mesh(jaw_drop_px: float = 0.0) -> np.ndarray:
    """The canonical face in a 64 px crop (y down), lower lip and jaw dropped by jaw_drop_px."""
    v = load_canonical_face().vertices.astype(np.float64)
    px = np.stack([S / 2 + 20 * v[:, 0], S * 0.45 - 20 * v[:, 1], 20 * v[:, 2]], axis=1)
    lower = v[:, 1] < v[LOWER_INNER, 1] + 1e-6
    px[lower, 1] += jaw_drop_px
    return px


def test_box_mask_and_the_open_mouth_hole():
    m = 32
    closed, open_ = _mesh(0.0), _mesh(5.0)
    box = mouth_box(closed, S, m)
    assert box.dtype == np.int32 and np.all(box >= 0) and np.all(box <= S - m)
    tri = load_topology().triangles
    lip_mid = ((open_[UPPER_INNER, :2] + open_[LOWER_INNER, :2]) / 2 - box).astype(int)
    n_open = mouth_coarse_normals(open_, tri, box, m)
    n_closed = mouth_coarse_normals(closed, tri, box, m)
    x, y = lip_mid
    assert np.all(n_open[y, x] == 0), "no triangle spans the open mouth: the net must see a hole there"
    assert np.linalg.norm(n_closed[y - 1:y + 2, x]).max() > 0.9
    np.testing.assert_allclose(np.linalg.norm(n_open[n_open.any(-1)], axis=-1), 1.0, atol=1e-5)
    own = mouth_region_mask([closed], box, m, grow_px=0.0)
    both = mouth_region_mask([closed, open_], box, m, grow_px=0.0)
    grown = mouth_region_mask([closed], box, m, grow_px=2.0)
    assert own[y, x] and both.sum() > own.sum() and grown.sum() > own.sum() and not grown.all()
    region = lip_region()
    lips = (closed[region.indices[region.weights >= 0.5], :2] - box).astype(int)
    inside = lips[(lips >= 0).all(1) & (lips < m).all(1)]
    assert own[inside[:, 1], inside[:, 0]].mean() > 0.95
    # The margin clears the box's border band and nothing else.
    wide = mouth_region_mask([closed, open_], box, m, grow_px=6.0)
    kept = mouth_region_mask([closed, open_], box, m, grow_px=6.0, margin_px=3)
    assert wide[:3].any() or wide[-3:].any() or wide[:, :3].any() or wide[:, -3:].any()
    assert not (kept[:3].any() or kept[-3:].any() or kept[:, :3].any() or kept[:, -3:].any())
    np.testing.assert_array_equal(kept[3:-3, 3:-3], wide[3:-3, 3:-3])


def test_params_of_a_net_trained_before_the_margin_read_as_no_margin():
    before = MouthParams(mask_margin_px=0).to_json()
    assert "mask_margin_px" not in before  # saved as work folders from before v13 hold it
    assert MouthParams.from_json(before).mask_margin_px == 0
    for params in (MouthParams(), MouthParams(w_perceptual=0.0), MouthParams(cover_mask=False),
                   MouthParams(w_adversarial=0.01, w_relit_grad=1.0, mask_margin_px=4)):
        assert MouthParams.from_json(params.to_json()) == params


def _layers(n: int, rng) -> LayerStack:
    normals = np.zeros((n, S, S, 3), np.float32)
    normals[..., 2] = 1.0
    albedo = rng.uniform(0.3, 0.7, size=(n, S, S, 3)).astype(np.float32)
    spec = np.full((n, S, S), 0.1, np.float32)
    return LayerStack(albedo, normals, spec, np.ones((n, S, S), np.float32), albedo, 1.0)


def test_train_and_paste(tmp_path):
    rng = np.random.default_rng(0)
    meshes = np.stack([_mesh(d) for d in (0.0, 2.0, 4.0, 1.0)])
    layers = _layers(4, rng)
    params = MouthParams(widths=(8, 16), steps=8, batch=2, checkpoint_every_s=1e9)
    samples = build_samples(layers, meshes, load_topology().triangles, S, params)
    assert samples.mouth_px == 24 and samples.coarse_normals.shape == (4, 24, 24, 3)
    decomposition = DecompositionModelTorch(DecomposeParams(widths=(8, 16)))
    wd = WorkDir(tmp_path)
    result = train_mouth(wd, samples, decomposition, params, progress=False)
    assert result.steps_done == 8 and all(np.isfinite(h["total"]) for h in result.loss_history)
    net, state = load_mouth(wd)
    assert state["mouth_px"] == 24
    pasted = paste_mouth(net, layers, meshes, meshes, load_topology().triangles, samples.boxes, 24, samples.grow_px)
    x, y = samples.boxes[0]
    outside = np.ones((S, S), bool)
    outside[y:y + 24, x:x + 24] = False
    np.testing.assert_array_equal(pasted.albedo[0][outside], layers.albedo[0][outside])
    assert pasted.blend.shape == (4, 24, 24) and 0 <= pasted.blend.min() and pasted.blend.max() <= 1
    np.testing.assert_allclose(np.linalg.norm(pasted.normals, axis=-1), 1.0, atol=1e-4)
    # The finished checkpoint resumes for the same decomposition, not for a retrained one.
    again = train_mouth(wd, samples, decomposition, params, progress=False)
    assert again.resumed_from_step == 8
    with torch.no_grad():
        decomposition.lighting.exposure.fill_(2.0)
    other = train_mouth(wd, samples, decomposition, params, progress=False)
    assert other.resumed_from_step == 0 and other.steps_done == 8


def test_random_lightings_are_plausible():
    rng = np.random.default_rng(3)
    for _ in range(20):
        lt = random_lighting(rng)
        assert lt.sh.shape == (9, 3) and lt.dirs.shape == (1, 3) and float(lt.dirs[0, 2]) > 0.1
        assert torch.all(lt.colours >= 0) and float(lt.sh[0].min()) > 0


def test_gradient_loss_sees_edges_not_offsets_and_trains():
    from models.enroll.mouth import gradient_l1

    a = torch.zeros(1, 3, 8, 8)
    a[..., 4:] = 1.0
    assert float(gradient_l1(a, a + 0.3)) < 1e-7  # a constant offset has the same edges
    shifted = torch.roll(a, 1, dims=-1)
    assert float(gradient_l1(shifted, a)) > 0.01
    assert "w_relit_grad" not in MouthParams().to_json()  # off by default: older work folders' records still match
    assert MouthParams(w_relit_grad=1.0).to_json()["w_relit_grad"] == 1.0
    rng = np.random.default_rng(1)
    meshes = np.stack([_mesh(d) for d in (0.0, 3.0)])
    params = MouthParams(widths=(8, 16), steps=2, batch=2, checkpoint_every_s=1e9, w_relit_grad=1.0, w_inside_mask=2.0,
                         w_perceptual=0.0)
    samples = build_samples(_layers(2, rng), meshes, load_topology().triangles, S, params)
    decomposition = DecompositionModelTorch(DecomposeParams(widths=(8, 16)))
    from models.enroll.mouth import mouth_losses, sample_mouth_batch
    from models.enroll.nets import MouthNet

    batch = sample_mouth_batch(samples, rng, params)
    terms = mouth_losses(batch, MouthNet(widths=(8, 16)), decomposition, [random_lighting(rng)], params)
    assert torch.isfinite(terms["total"].detach()) and float(terms["relit"].detach()) > 0


def test_blend_covers_the_mask():
    from models.enroll.mouth import CoveringMouthNet, make_mouth_net

    net = make_mouth_net(MouthParams(widths=(8, 16)))
    assert isinstance(net, CoveringMouthNet)
    assert not isinstance(make_mouth_net(MouthParams(widths=(8, 16), cover_mask=False)), CoveringMouthNet)
    mask = torch.zeros(1, 1, 48, 48)
    mask[..., 10:38, 10:38] = 1.0
    x = torch.zeros(1, 3, 48, 48)
    with torch.no_grad():
        _, _, _, blend = net(x, x, x, mask)
    assert float(blend[..., 17:31, 17:31].min()) > 0.999  # inside: the net's mouth, whatever its learned blend
    assert float(blend[..., 0, :].max()) < 0.1 and float(blend[..., :, -1].max()) < 0.1  # fades out at the box border


def test_perceptual_term_compares_face_features_and_trains():
    from models.enroll.mouth import mouth_losses, sample_mouth_batch
    from models.enroll.nets import MouthNet
    from models.face.identity import DlibFaceResNet

    assert "w_perceptual" not in MouthParams(w_perceptual=0.0).to_json()  # off: recorded as before it existed
    assert MouthParams(w_perceptual=0.3).to_json()["w_perceptual"] == 0.3
    features = DlibFaceResNet.load()
    a = torch.rand(1, 3, 40, 40)
    assert all(float((f - g).abs().max()) == 0 for f, g in zip(features.features(a), features.features(a.clone())))
    blurred = torch.nn.functional.avg_pool2d(a, 3, 1, 1)
    # Same mean colour, lost detail: the features see it.
    assert sum(float((f - g).abs().mean()) for f, g in zip(features.features(a), features.features(blurred))) > 0.01

    rng = np.random.default_rng(2)
    meshes = np.stack([_mesh(d) for d in (0.0, 3.0)])
    params = MouthParams(widths=(8, 16), steps=2, batch=2, checkpoint_every_s=1e9, w_perceptual=0.5)
    samples = build_samples(_layers(2, rng), meshes, load_topology().triangles, S, params)
    decomposition = DecompositionModelTorch(DecomposeParams(widths=(8, 16)))
    net = MouthNet(widths=(8, 16))
    batch = sample_mouth_batch(samples, rng, params)
    with pytest.raises(ValueError, match="perceptual net"):
        mouth_losses(batch, net, decomposition, [random_lighting(rng)], params)
    terms = mouth_losses(batch, net, decomposition, [random_lighting(rng)], params, features)
    assert float(terms["perceptual"].detach()) > 0
    terms["perceptual"].backward()
    assert sum(float(p.grad.abs().sum()) for p in net.parameters() if p.grad is not None) > 0


def test_adversarial_terms_give_each_side_only_its_own_gradient(tmp_path):
    from models.enroll.mouth import PatchDiscriminator, adversarial_terms

    torch.manual_seed(0)
    d = PatchDiscriminator(8)
    generated = torch.rand(2, 3, 24, 24, requires_grad=True)
    recorded = torch.rand(2, 3, 24, 24)
    mask = torch.zeros(2, 1, 24, 24)
    mask[:, :, 6:18, 6:18] = 1.0
    g_term, d_loss = adversarial_terms(d, generated, recorded, mask)
    # The generator's term moves only the generated image; the discriminator's loss only the discriminator.
    g_grad = torch.autograd.grad(g_term, [generated, *d.parameters()], allow_unused=True)
    assert g_grad[0].abs().sum() > 0 and all(g is None for g in g_grad[1:])
    d_grad = torch.autograd.grad(d_loss, [generated, *d.parameters()], allow_unused=True)
    assert d_grad[0] is None and any(g is not None and g.abs().sum() > 0 for g in d_grad[1:])
    # Patches outside the mask do not count: changing the image there changes neither term.
    far = generated.detach().clone()
    far[:, :, :2, :2] += 0.5
    g_far, _ = adversarial_terms(d, far, recorded, torch.zeros_like(mask))
    assert float(g_far) == 0.0

    # Trains and resumes with the discriminator in the checkpoint.
    rng = np.random.default_rng(0)
    meshes = np.stack([_mesh(dj) for dj in (0.0, 3.0, 1.0)])
    layers = _layers(3, rng)
    params = MouthParams(widths=(8, 16), steps=4, batch=2, checkpoint_every_s=1e9, w_perceptual=0.0,
                         w_adversarial=0.1, adversarial_start_frac=0.5, discriminator_width=8)
    samples = build_samples(layers, meshes, load_topology().triangles, S, params)
    decomposition = DecompositionModelTorch(DecomposeParams(widths=(8, 16)))
    result = train_mouth(WorkDir(tmp_path), samples, decomposition, params, progress=False, max_steps_this_run=2)
    assert "adversarial" not in result.loss_history[-1]  # not before adversarial_start_frac
    result = train_mouth(WorkDir(tmp_path), samples, decomposition, params, progress=False)
    assert result.resumed_from_step == 2 and "discriminator" in result.loss_history[-1]
    net, state = load_mouth(WorkDir(tmp_path))
    assert state["params"]["w_adversarial"] == 0.1 and not any("discriminator" in k for k in state["net"])
    assert "w_adversarial" not in MouthParams().to_json()
