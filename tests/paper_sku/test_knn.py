import numpy as np
import pytest
import torch
import torch.nn.functional as F
from paper_sku.knn import embed, evaluate, knn_predict
from paper_sku.model import PaperCNN
from sklearn.metrics import confusion_matrix, f1_score
from sklearn.neighbors import KNeighborsClassifier
from torch.utils.data import TensorDataset

from embedcam.errors import EmbedcamValueError, ShapeError


def test_hand_example():
    gallery = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [-0.6, 0.8], [-1.0, 0.0]])
    labels = torch.tensor([0, 0, 1, 1, 2])
    query = torch.tensor([[2.0, 0.1], [0.0, -1.0], [-1.0, 0.1]])  # scale does not matter
    # query 1 = (0, -1): similarities 0, -0.6, -1, -0.8, 0 -> top3 = 0, 4 (ties, gallery order), 1
    assert knn_predict(query, gallery, labels, k=3).tolist() == [0, 0, 1]
    assert knn_predict(query, gallery, labels, k=1).tolist() == [0, 0, 2]


def test_vote_tie_goes_to_larger_similarity_then_smaller_id():
    gallery = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # k=2: one vote each; the nearer neighbour's class wins
    assert knn_predict(torch.tensor([[0.2, 1.0]]), gallery, torch.tensor([3, 1]), k=2).tolist() == [
        1
    ]
    # exact tie in votes and similarity: the smaller class id
    assert knn_predict(torch.tensor([[1.0, 1.0]]), gallery, torch.tensor([3, 1]), k=2).tolist() == [
        1
    ]


@pytest.mark.parametrize("seed", range(3))
def test_agrees_with_sklearn_without_vote_ties(seed):
    gen = torch.Generator().manual_seed(seed)
    gallery = F.normalize(torch.randn(200, 6, generator=gen), dim=1)
    labels = (gallery[:, 0] + 0.5 * torch.randn(200, generator=gen) > 0).long()  # 2 classes
    query = torch.randn(100, 6, generator=gen)
    ours = knn_predict(query, gallery, labels, k=5, chunk_size=17)
    clf = KNeighborsClassifier(n_neighbors=5, metric="cosine").fit(gallery.numpy(), labels.numpy())
    assert ours.tolist() == clf.predict(query.numpy()).tolist()


@pytest.mark.parametrize("seed", range(3))
def test_evaluate_agrees_with_sklearn(seed):
    rng = np.random.default_rng(seed)
    true = rng.integers(0, 5, 60)
    pred = np.where(rng.random(60) < 0.6, true, rng.integers(0, 4, 60))
    ev = evaluate(torch.from_numpy(pred), torch.from_numpy(true), num_classes=6)
    assert ev.macro_f1 == pytest.approx(f1_score(true, pred, average="macro"), abs=1e-12)
    assert ev.errors == int((pred != true).sum())
    assert ev.accuracy == pytest.approx((pred == true).mean())
    assert ev.confusion.tolist() == confusion_matrix(true, pred, labels=range(6)).tolist()
    assert not bool(ev.present[5])  # class 5 never occurs: left out of the macro average


def test_embed_restores_mode_and_returns_all_rows():
    torch.manual_seed(0)
    model = PaperCNN(width=0.125, in_size=32).train()
    data = TensorDataset(torch.rand(10, 3, 32, 32), torch.arange(10) % 3)
    emb, labels = embed(model, data, batch_size=4)
    assert emb.shape == (10, 128) and labels.tolist() == (torch.arange(10) % 3).tolist()
    assert model.training
    model.eval()
    with torch.no_grad():
        assert torch.allclose(emb, model(data.tensors[0]), atol=1e-6)


def test_bad_inputs():
    gallery = torch.eye(3)
    labels = torch.tensor([0, 1, 2])
    with pytest.raises(EmbedcamValueError, match="query contains NaN"):
        knn_predict(torch.tensor([[float("nan"), 0.0, 0.0]]), gallery, labels)
    with pytest.raises(EmbedcamValueError, match=r"zero-norm rows \[0\]"):
        knn_predict(torch.zeros(1, 3), gallery, labels, k=1)
    with pytest.raises(EmbedcamValueError, match=r"k must be an int in \[1, 3\]"):
        knn_predict(torch.ones(1, 3), gallery, labels, k=5)
    with pytest.raises(ShapeError, match="dimension 2 but gallery has 3"):
        knn_predict(torch.ones(1, 2), gallery, labels, k=1)
    with pytest.raises(ShapeError, match=r"gallery_labels must be \(3,\)"):
        knn_predict(torch.ones(1, 3), gallery, labels[:2], k=1)
    with pytest.raises(EmbedcamValueError, match=r"true has labels outside \[0, 2\)"):
        evaluate(torch.tensor([0, 1]), torch.tensor([0, 2]), num_classes=2)
    with pytest.raises(ShapeError, match="one shape"):
        evaluate(torch.tensor([0, 1]), torch.tensor([0]), num_classes=2)
