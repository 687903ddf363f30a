import pytest
import torch
from paper_sku.model import PAPER_FILTERS, PaperCNN

from embedcam import CentroidTarget, EmbeddingCAM
from embedcam.errors import ConfigurationError, ShapeError


def test_paper_defaults_give_unit_norm_128d_embeddings():
    torch.manual_seed(0)
    model = PaperCNN().eval()
    assert model.channels == PAPER_FILTERS == (64, 64, 128, 256, 512)
    assert model.in_size == (128, 128)
    # 128 px -> 4 x 4 after five poolings: fc1 sees 512 * 16 inputs
    assert model.head.fc1.in_features == 512 * 4 * 4
    assert model.head.fc1.out_features == 256 and model.head.fc2.out_features == 128
    out = model(torch.rand(2, 3, 128, 128))
    assert out.shape == (2, 128)
    assert torch.allclose(out.norm(dim=1), torch.ones(2), atol=1e-6)


def test_width_multiplier_scales_filters():
    assert PaperCNN(width=0.25, in_size=64).channels == (16, 16, 32, 64, 128)
    assert PaperCNN(width=0.01, in_size=32).channels == (1, 1, 1, 3, 5)


def test_blocks_are_conv_bn_relu_pool():
    block = PaperCNN(width=0.25, in_size=64).features.block2
    assert block.conv.kernel_size == (3, 3) and block.conv.bias is None
    assert isinstance(block.bn, torch.nn.BatchNorm2d)
    assert isinstance(block.relu, torch.nn.ReLU) and not block.relu.inplace
    assert isinstance(block.pool, torch.nn.MaxPool2d)


def test_block_layers_and_cam_layer_shapes_at_64px():
    model = PaperCNN(width=0.25, in_size=64).eval()
    assert model.block_layer_names == tuple(f"features.block{i}.relu" for i in range(5))
    assert model.cam_layer_name == "features.block4.relu"
    assert model.cam_layer is model.get_submodule("features.block4.relu")
    assert model.block_layers[-1] is model.cam_layer
    shapes = {}
    hooks = [
        layer.register_forward_hook(lambda m, i, o, n=n: shapes.__setitem__(n, tuple(o.shape)))
        for n, layer in zip(model.block_layer_names, model.block_layers)
    ]
    model(torch.rand(1, 3, 64, 64))
    for h in hooks:
        h.remove()
    # before pooling: 64, 32, 16, 8, 4 (the last block's activation, FINDINGS: 4 x 4 at 64 px)
    assert [shapes[n] for n in model.block_layer_names] == [
        (1, 16, 64, 64),
        (1, 16, 32, 32),
        (1, 32, 16, 16),
        (1, 64, 8, 8),
        (1, 128, 4, 4),
    ]


def test_other_and_non_square_input_sizes():
    model = PaperCNN(width=0.125, in_size=(64, 96), embedding_dim=32).eval()
    assert model.head.fc1.in_features == model.channels[-1] * 2 * 3
    assert model(torch.rand(3, 3, 64, 96)).shape == (3, 32)
    odd = PaperCNN(width=0.125, in_size=70).eval()  # 70 -> 35 -> 17 -> 8 -> 4 -> 2
    assert odd.head.fc1.in_features == odd.channels[-1] * 2 * 2
    assert odd(torch.rand(1, 3, 70, 70)).shape == (1, 128)


@pytest.mark.parametrize("layer", ["object", "name", "block_before_last"])
def test_embedding_cam_works_with_the_cam_layer(layer):
    torch.manual_seed(0)
    model = PaperCNN(width=0.125, in_size=64).eval()
    images = torch.rand(3, 3, 64, 64)
    with torch.no_grad():
        centroids = model(images)
    target_layer = {
        "object": model.cam_layer,
        "name": "features.block4.relu",
        "block_before_last": model.block_layer_names[-2],
    }[layer]
    res = EmbeddingCAM(model, target_layer)(images, CentroidTarget(centroids, torch.arange(3)))
    assert res.maps.shape == (3, 64, 64)
    side = 8 if layer == "block_before_last" else 4
    assert res.raw.shape == (3, side, side)
    assert torch.allclose(res.scores, torch.ones(3), atol=1e-5)  # each image is its own centroid


def test_bad_configuration_and_input():
    with pytest.raises(ConfigurationError, match="in_size must be >= 32"):
        PaperCNN(in_size=16)
    with pytest.raises(ConfigurationError, match="width must be > 0"):
        PaperCNN(width=0)
    with pytest.raises(ConfigurationError, match="embedding_dim must be a positive integer"):
        PaperCNN(embedding_dim=0)
    model = PaperCNN(width=0.125, in_size=64)
    with pytest.raises(ShapeError, match=r"expects images \(B, 3, 64, 64\), got \(1, 3, 32, 32\)"):
        model(torch.rand(1, 3, 32, 32))
    with pytest.raises(ShapeError, match="in_size"):
        model(torch.rand(3, 64, 64))
