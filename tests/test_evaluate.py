"""The evaluation tools on cases with known answers: torch-fidelity through the in-domain
extractor (identical sets score zero, a shifted set does not), nearest-neighbour distances, and
the classifier learning easy synthetic textures."""
import numpy as np
import pytest
import torch
from PIL import Image

from fgsd import checkpoints, classifier, data, evaluate
from fgsd.errors import FgsdError


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """An untrained classifier: random features are enough to tell distributions apart."""
    torch.manual_seed(0)
    net = classifier.Classifier(channels=1, n_classes=3, width=16, feature_dim=16)
    path = tmp_path_factory.mktemp("clf") / "model.pt"
    checkpoints.save(path, "classifier", net, classes=["a", "b", "c"])
    return path


def gratings(n, freq, seed):
    g = np.random.default_rng(seed)
    yy, xx = np.mgrid[:16, :16]
    phase = g.uniform(0, 2 * np.pi, (n, 1, 1))
    img = 0.5 + 0.3 * np.sin(freq * xx[None] + phase) + 0.05 * g.standard_normal((n, 16, 16))
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)[:, None]


def test_fidelity_of_a_set_against_itself_is_zero(weights):
    x = gratings(40, 0.5, 0)
    m = evaluate.fidelity(x, x, evaluate.EXTRACTOR, weights, kid_subset=20, seed=0, device=torch.device("cpu"))
    assert abs(m["fid"]) < 1e-3 and abs(m["kid"]) < 1e-3
    assert m["precision"] == 1 and m["recall"] == 1


def test_fidelity_separates_distributions(weights):
    cpu = torch.device("cpu")
    a, a2, b = gratings(60, 0.5, 1), gratings(60, 0.5, 2), gratings(60, 1.5, 3)
    same = evaluate.fidelity(a, a2, evaluate.EXTRACTOR, weights, 30, 0, cpu)
    other = evaluate.fidelity(a, b, evaluate.EXTRACTOR, weights, 30, 0, cpu)
    assert other["kid"] > 10 * max(abs(same["kid"]), 1e-6) and other["fid"] > 10 * same["fid"]
    assert other["recall"] < same["recall"]


def test_fidelity_is_deterministic_and_caps_the_kid_subset(weights):
    a, b = gratings(12, 0.5, 4), gratings(30, 1.0, 5)
    m1 = evaluate.fidelity(a, b, evaluate.EXTRACTOR, weights, 100, 7, torch.device("cpu"))
    m2 = evaluate.fidelity(a, b, evaluate.EXTRACTOR, weights, 100, 7, torch.device("cpu"))
    assert m1 == m2


def test_nearest_rmse_known_answers():
    pool = torch.arange(10.0).view(10, 1, 1, 1).expand(10, 1, 8, 8)  # constant images 0, 1, ..., 9
    assert torch.equal(evaluate.nearest_rmse(pool[:5], pool), torch.zeros(5))
    probe = torch.cat([pool[:5] + 0.1, torch.full((1, 1, 8, 8), 20.0)])
    torch.testing.assert_close(evaluate.nearest_rmse(probe, pool, batch=4), torch.tensor([0.1] * 5 + [11.0]))
    # at the pipeline's sizes (hundreds of 32x32 crops, where cdist would switch to a matrix product)
    crops = torch.rand(400, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    assert torch.equal(evaluate.nearest_rmse(crops[:40], crops), torch.zeros(40)), "a copy must be at distance 0"


def test_classifier_learns_the_synthetic_textures(tiny_cfg, tmp_path):
    data.prepare(tiny_cfg, tmp_path / "data")
    tiny_cfg["evaluate"].update(classifier_steps=60, classifier_width=16, feature_dim=16)
    metrics = classifier.train_classifier(tiny_cfg, tmp_path / "data", tmp_path / "clf" / "model.pt",
                                          tmp_path / "clf" / "metrics.json", "cpu")
    assert metrics["n_classes"] == 4 and metrics["n_test"] == 4 * 6
    assert metrics["test_accuracy"] > 0.5, metrics  # chance is 0.25
    model, classes = classifier.load_classifier(tmp_path / "clf" / "model.pt")
    assert classes == ["tex0", "tex1", "tex3", "tex2"]  # seen classes first, then the held-out one
    again = classifier.train_classifier(tiny_cfg, tmp_path / "data", tmp_path / "clf2" / "model.pt",
                                        tmp_path / "clf2" / "metrics.json", "cpu")
    assert again == metrics, "same seed, same classifier"


def test_phase_randomised_keeps_mean_and_power_spectrum_but_not_the_image():
    g = torch.Generator().manual_seed(0)
    x = 0.5 + 0.05 * torch.randn(6, 1, 16, 16, generator=g)  # inside [0, 1]: the clip does nothing
    y = classifier.phase_randomised(x, torch.Generator().manual_seed(1))
    torch.testing.assert_close(y.mean((-2, -1)), x.mean((-2, -1)))
    torch.testing.assert_close(torch.fft.fft2(y).abs(), torch.fft.fft2(x).abs(), atol=1e-4, rtol=1e-4)
    corr = ((x - x.mean()) * (y - y.mean())).mean() / (x.std() * y.std())
    assert abs(corr) < 0.2, "phases scrambled: the image itself is gone"
    assert torch.equal(y, classifier.phase_randomised(x, torch.Generator().manual_seed(1)))


def write_structured_textures(folder, size=96, seed=0):
    """Two classes whose structure is not second-order: sparse bright squares, and sharp-edged bars
    of random widths. Phase-randomised, both become Gaussian noise with the same spectrum."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    dots = np.full((size, size), 0.2)
    for r, c in rng.integers(0, size - 3, (60, 2)):
        dots[r:r + 3, c:c + 3] = 0.9
    bars = np.repeat(np.cumsum(rng.integers(2, 6, size)) % 2 == 0, 1)[None, :size].repeat(size, 0) * 0.6 + 0.2
    for name, img in (("dots", dots), ("bars", bars)):
        Image.fromarray((img * 255).astype(np.uint8)).save(folder / f"{name}.png")
    return folder


def test_judge_rejects_phase_randomised_crops_of_structured_textures(tiny_cfg, tmp_path):
    tiny_cfg["data"].update(folder=str(write_structured_textures(tmp_path / "tex")), n_unseen=0,
                            train_per_class=64, test_per_class=16)
    data.prepare(tiny_cfg, tmp_path / "data")
    tiny_cfg["evaluate"].update(classifier_steps=200, classifier_batch=32, classifier_lr=0.005, classifier_width=16,
                                feature_dim=16, phase_negatives=0.25)
    m = classifier.train_classifier(tiny_cfg, tmp_path / "data", tmp_path / "c" / "model.pt",
                                    tmp_path / "c" / "metrics.json", "cpu")
    assert m["phase_randomised_rejected"] > 0.8 and m["real_judged_synthetic"] < 0.2, m
    assert m["test_accuracy"] > 0.8, m
    tiny_cfg["evaluate"].update(phase_negatives=0, classifier_steps=2)  # the old judge: no such class
    m0 = classifier.train_classifier(tiny_cfg, tmp_path / "data", tmp_path / "c0" / "model.pt",
                                     tmp_path / "c0" / "metrics.json", "cpu")
    assert "phase_randomised_rejected" not in m0
    model, classes = classifier.load_classifier(tmp_path / "c0" / "model.pt")
    assert model.head.out_features == len(classes) == 2


def test_missing_inception_weights_name_the_key(tiny_cfg, tmp_path, weights):
    data.prepare(tiny_cfg, tmp_path / "data")
    tiny_cfg["evaluate"]["inception_weights"] = str(tmp_path / "nope.pth")
    with pytest.raises(FgsdError, match="evaluate.inception_weights"):
        evaluate.Evaluator(tiny_cfg, tmp_path / "data", weights, "cpu")


def test_per_class_rows_count_each_class_and_what_the_judge_calls_phase_randomised(tiny_cfg, tmp_path, weights,
                                                                                    monkeypatch):
    data.prepare(tiny_cfg, tmp_path / "data")
    ev = evaluate.Evaluator(tiny_cfg, tmp_path / "data", weights, "cpu")
    ev.synthetic = 3  # as if the judge had learnt the phase-randomised class (its index follows the classes')
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    judged = torch.tensor([0, 3, 3, 1, 1, 1, 1, 3])  # class a: 1 right, 2 phase-randomised; b: 3 right, 1
    monkeypatch.setattr(evaluate, "predict", lambda model, x, device: (None, judged))
    images = ev.test_x[:8].mul(255).round().to(torch.uint8).numpy()
    ev.group("conditional", "c2f", 0, images, labels, [0, 1], memorisation=False, per_class=True)
    ev.group("nfe", "c2f", 0, images, labels, [0, 1], memorisation=False)
    got = {(r["set"], r["metric"]): (r["value"], r["n_samples"]) for r in ev.rows}
    assert got["conditional", "accuracy"] == (4 / 8, 8) and got["conditional", "judged_synthetic"] == (3 / 8, 8)
    assert got["conditional", "accuracy.a"] == (0.25, 4) and got["conditional", "accuracy.b"] == (0.75, 4)
    assert got["conditional", "judged_synthetic.a"] == (0.5, 4) and got["conditional", "judged_synthetic.b"] == (0.25, 4)
    assert not any(m.startswith("accuracy.") for s, m in got if s == "nfe"), "only where the set asks for them"
