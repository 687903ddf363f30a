"""ViT token and channels-last reshape transforms: layouts by hand, a tiny ViT on every backend."""

from __future__ import annotations

import pickle

import pytest
import torch
from torch import nn
from torchvision.models.vision_transformer import VisionTransformer

import embedcam as ec
from embedcam.cam import channels_last_reshape, token_reshape
from embedcam.errors import ConfigurationError, ShapeError


def test_token_layout_by_hand():
    # token t (after the prefix) holds the value t in every channel: it must land at (t // w, t % w)
    b, p, h, w, k = 2, 2, 3, 4, 5
    patches = torch.arange(h * w, dtype=torch.float32)[None, :, None].expand(b, h * w, k)
    tokens = torch.cat([torch.full((b, p, k), -1.0), patches], dim=1)
    fmap = token_reshape(num_prefix_tokens=p, grid=(h, w))(tokens)
    assert fmap.shape == (b, k, h, w)
    for t in range(h * w):
        assert (fmap[:, :, t // w, t % w] == t).all()
    assert (fmap != -1).all()  # the prefix is gone
    square = token_reshape()(torch.randn(1, 1 + 16, 3))
    assert square.shape == (1, 3, 4, 4)
    none = token_reshape(num_prefix_tokens=0)(torch.arange(9.0).reshape(1, 9, 1))
    assert none[0, 0].tolist() == [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0], [6.0, 7.0, 8.0]]


def test_channels_last_by_hand():
    x = torch.randn(2, 3, 4, 5)
    out = channels_last_reshape()(x)
    assert out.shape == (2, 5, 3, 4)
    assert out[1, 4, 2, 3] == x[1, 2, 3, 4]


def test_bad_tokens_and_arguments():
    with pytest.raises(ShapeError, match="not a square grid; pass grid"):
        token_reshape()(torch.randn(1, 1 + 6, 4))
    with pytest.raises(ShapeError, match="grid=\\(2, 2\\) holds 4 patches"):
        token_reshape(grid=(2, 2))(torch.randn(1, 1 + 6, 4))
    with pytest.raises(ShapeError, match="channels_last_reshape"):
        token_reshape()(torch.randn(1, 4, 4, 8))
    with pytest.raises(ShapeError, match="num_prefix_tokens"):
        token_reshape(num_prefix_tokens=3)(torch.randn(1, 3, 8))
    with pytest.raises(ShapeError, match="token_reshape"):
        channels_last_reshape()(torch.randn(1, 17, 8))
    for bad in (-1, 1.5, True, "1"):
        with pytest.raises(ConfigurationError, match="num_prefix_tokens"):
            token_reshape(num_prefix_tokens=bad)  # type: ignore[arg-type]
    for bad_grid in ((0, 4), (2,), (2.0, 2), "22"):
        with pytest.raises(ConfigurationError, match="grid"):
            token_reshape(grid=bad_grid)  # type: ignore[arg-type]


def test_pickle_and_repr():
    t = token_reshape(2, grid=(3, 5))
    back = pickle.loads(pickle.dumps(t))
    assert repr(back) == "token_reshape(num_prefix_tokens=2, grid=(3, 5))"
    x = torch.randn(2, 2 + 15, 4)
    assert torch.equal(back(x), t(x))
    assert repr(pickle.loads(pickle.dumps(channels_last_reshape()))) == "channels_last_reshape()"


def _vit() -> VisionTransformer:
    torch.manual_seed(0)
    vit = VisionTransformer(
        image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32
    )
    vit.heads = nn.Identity()
    return vit.eval()


def test_tiny_vit_gradcam_by_hand_and_across_backends():
    vit = _vit()
    images = torch.rand(3, 3, 32, 32)
    ref = torch.randn(16)
    layer = vit.encoder.layers[-1].ln_1
    res = {
        b: ec.EmbeddingCAM(vit, layer, backend=b, reshape_transform=token_reshape())(
            images, ec.ReferenceTarget(ref)
        )
        for b in ("native", "grad-cam")
    }
    assert res["native"].maps.shape == (3, 32, 32) and res["native"].raw.shape == (3, 4, 4)
    assert (res["native"].maps - res["grad-cam"].maps).abs().max() <= 1e-5
    # by hand: the layer's tokens and the gradient of the score, class token dropped
    store = {}

    def hook(module, inputs, output):
        output.retain_grad()
        store["a"] = output

    handle = layer.register_forward_hook(hook)
    try:
        score = nn.functional.cosine_similarity(vit(images), ref[None], dim=1)
        score.sum().backward()
    finally:
        handle.remove()
        vit.zero_grad(set_to_none=True)
    a = store["a"][:, 1:].detach().reshape(3, 4, 4, 16).permute(0, 3, 1, 2)
    g = store["a"].grad[:, 1:].reshape(3, 4, 4, 16).permute(0, 3, 1, 2)
    raw = (g.mean(dim=(2, 3), keepdim=True) * a).sum(dim=1)
    torch.testing.assert_close(res["native"].raw, raw, rtol=1e-4, atol=1e-6)
    assert not res["native"].degenerate.any()


def test_tiny_vit_after_the_final_norm_has_no_patch_gradient():
    # After the last block only the class token reaches the (class-token) embedding: the patch
    # tokens' gradient is exactly zero, the explanation is flagged, never a map of noise.
    vit = _vit()
    cam = ec.EmbeddingCAM(vit, vit.encoder.ln, reshape_transform=token_reshape())
    res = cam(torch.rand(2, 3, 32, 32), ec.ReferenceTarget(torch.randn(16)))
    assert res.degenerate.all() and res.empty.all() and res.maps.abs().max() == 0


def test_tiny_vit_pairs_and_a_mean_pooled_point_to_point():
    vit = _vit()
    cam = ec.EmbeddingCAM(vit, vit.encoder.layers[-1].ln_1, reshape_transform=token_reshape())
    pairs = ec.explain_pair(cam, torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32))
    assert pairs.query.raw.shape == (2, 4, 4)
    # a class-token embedding is not a pooling of the patch grid: point_to_point refuses it
    with pytest.raises(ConfigurationError, match="average pool"):
        ec.point_to_point(
            vit,
            "encoder.ln",
            torch.rand(1, 3, 32, 32),
            torch.rand(1, 3, 32, 32),
            reshape_transform=token_reshape(),
        )
