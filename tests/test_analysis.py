"""Sweep and separation statistics on tiny trained models and on features with known answers."""
import numpy as np
import pandas as pd
import pytest
from conftest import train_into

from fgsd import analysis, checkpoints, data, files, network, summary
from fgsd.errors import FgsdError


def test_separation_ratio_by_hand(tmp_path):
    # two layers (sizes 1 and 2), three classes with known centroids and variances
    cent = np.array([[0, 0, 0], [1, 0, 0], [0, 3, 4]], np.float32)
    var = np.array([[1, 4], [4, 1], [1, 1]], np.float32)
    files.save_npz(tmp_path / "phi.npz", layers=np.array(["a", "b"]), layer_sizes=np.array([1, 2]),
                   centroids_train=cent, within_var_train=var, centroid_labels_train=np.array([0, 1, 2]),
                   classes=np.array(["x", "y", "z"]))
    analysis.separation(tmp_path / "phi.npz", tmp_path / "phi.npz", tmp_path / "sep.csv")
    sep = pd.read_csv(tmp_path / "sep.csv")
    sep = sep[sep.model == "mixture"].set_index(["cls_a", "cls_b", "layer"])
    assert sep.loc[("x", "y", "a"), "ratio"] == pytest.approx(1 / np.sqrt(1 * 4))
    assert sep.loc[("x", "z", "b"), "centroid_sqdist"] == pytest.approx(25)
    assert sep.loc[("x", "z", "b"), "ratio"] == pytest.approx(25 / np.sqrt(4 * 1))
    assert sep.loc[("y", "z", "all"), "ratio"] == pytest.approx((1 + 25) / np.sqrt(5 * 2))


@pytest.fixture
def trained(tiny_cfg, tmp_path):
    data.prepare(tiny_cfg, tmp_path / "data")
    tiny_cfg["train"]["conditional"]["init"] = "mixture"  # as in the pipeline: both fine-tune the mixture model
    for kind in ("mixture", "conditional", "single"):
        init = {"init": tmp_path / "models/mixture/model.pt"} if kind != "mixture" else {}
        train_into(tiny_cfg, kind, tmp_path / "data", tmp_path / "models" / kind, tmp_path / "state", **init)
    return tiny_cfg, tmp_path


def test_sweep_rows_and_input_psnr(trained):
    import torch

    from fgsd import references
    from fgsd.runtime import generator, to_float
    cfg, tmp = trained
    cfg["sigmas"] = [0.05, 0.5]
    m = tmp / "models"
    analysis.sweep(cfg, m / "mixture/model.pt", m / "conditional/model.pt", m / "single/model.pt", tmp / "data",
                   tmp / "sweep.csv", tmp / "refs.json", device="cpu")
    d = pd.read_csv(tmp / "sweep.csv")
    test = files.load_npz(tmp / "data" / "test.npz")
    n_test = len(test["labels"])
    assert len(d) == n_test * 2 * 9
    pairs = set(zip(d.model, d.conditioning))
    assert pairs == {("conditional", "exemplar"), ("conditional", "centroid"), ("conditional", "wrong"),
                     ("conditional", "y0-centroid"), ("mixture", "none"), ("single", "none"), ("trivial-mean", "none"),
                     ("gaussian-mixture", "none"), ("gaussian-class", "class")}
    # input PSNR of x + σz is close to -20 log10 σ (before clipping, peak 1)
    for s in (0.05, 0.5):
        assert d[d.sigma == s].input_psnr.mean() == pytest.approx(-20 * np.log10(s), abs=0.5)
    # every denoiser saw the same noisy crops: recompute them and two outputs from scratch
    x = to_float(test["images"])
    noisy = x + 0.5 * torch.randn(x.shape, generator=generator(cfg["seed"], 22, 1))
    mix, _ = checkpoints.load(m / "mixture/model.pt", network.UNet, ("mixture",))
    rows = d[d.sigma == 0.5].sort_values("image")
    level, idx = torch.full((n_test,), 0.5), torch.arange(n_test)
    for model, out in (("mixture", mix(noisy).detach()), ("trivial-mean", references.trivial()(noisy, level, idx))):
        np.testing.assert_allclose(rows[rows.model == model].output_psnr, network.psnr(out, x).numpy(), rtol=1e-4)
    assert set(d[d.is_y0].cls) == {cfg["train"]["single"]["class"]}
    gain = summary.psnr_gain(d)
    assert len(gain) == 2 * 9 and (gain.n == n_test).all()
    assert files.load_json(tmp / "refs.json")["g_infinity_db"] > 0


def test_density_stage_and_summary(trained):
    cfg, tmp = trained
    from fgsd import centroids
    for kind in ("conditional", "mixture"):
        centroids.compute(cfg, tmp / f"models/{kind}/model.pt", tmp / "data", tmp / f"phi_{kind}.npz", tmp / "c.csv",
                          device="cpu")
    cfg["analysis"].update(kl_n_sigmas=3, kl_max_pairs=2)
    analysis.density(cfg, tmp / "models/conditional/model.pt", tmp / "phi_conditional.npz", tmp / "phi_mixture.npz",
                     tmp / "data", tmp / "d.csv", "cpu")
    d = pd.read_csv(tmp / "d.csv")
    assert len(d) == 2 and {"sym_kl", "sym_kl_half_min", "sym_kl_double_min", "sym_kl_diff_form"} <= set(d.columns)
    assert (d[["sym_kl", "sym_kl_half_min", "sym_kl_double_min"]].nunique(axis=1) == 3).all(), "three grid starts"
    diff = d[["sym_kl_diff_form", "sym_kl_diff_form_half_min", "sym_kl_diff_form_double_min"]]
    assert (diff.nunique(axis=1) == 3).all(), "three grid starts for the difference form too"
    assert (d.centroid_sqdist > 0).all()
    net, _ = checkpoints.load(tmp / "models/conditional/model.pt", network.UNet, ("conditional",))
    blocks = [f"centroid_sqdist_{b}" for b in network.TAPS]
    np.testing.assert_allclose(d[blocks].sum(axis=1), d.centroid_sqdist, rtol=1e-5)  # the x-axis split by block
    np.testing.assert_allclose(d[[f"centroid_sqdist_{b}" for b in net.match]].sum(axis=1), d.centroid_sqdist_matched,
                               rtol=1e-5)
    assert (d.centroid_sqdist_matched < d.centroid_sqdist).all(), "the matched blocks are a part of phi"
    mix = files.load_npz(tmp / "phi_mixture.npz")
    names = [str(c) for c in mix["classes"]]
    at = {int(c): k for k, c in enumerate(mix["centroid_labels_train"])}
    for _, row in d.iterrows():  # the control column is the mixture model's own centroid distance
        a, b = (mix["centroids_train"][at[names.index(c)]] for c in (row.cls_a, row.cls_b))
        assert row.centroid_sqdist_mixture == pytest.approx(float(((a - b) ** 2).sum()), rel=1e-5)


def _fake_sweep(offset: float) -> pd.DataFrame:
    """Two crops, two sigmas: mixture at 20 dB, the conditional model `offset` dB above it,
    the single-class model 1 dB above the mixture on the y0 crop (image 0)."""
    rows = []
    for s in (0.1, 1.0):
        for image in (0, 1):
            for model, cond, psnr in (("mixture", "none", 20.0), ("conditional", "exemplar", 20.0 + offset),
                                      ("conditional", "wrong", 18.0 - image), ("single", "none", 21.0 if image == 0 else 15.0)):
                rows.append(dict(model=model, conditioning=cond, sigma=s, image=image, is_y0=image == 0, cls=f"c{image}",
                                 output_psnr=psnr, input_psnr=-20 * np.log10(s)))
    return pd.DataFrame(rows)


def test_seed_spread_is_mean_and_std_over_seeds():
    spread = summary.seed_spread({0: _fake_sweep(0.5), 1: _fake_sweep(1.0), 2: _fake_sweep(1.5)})
    assert spread["seeds"] == [0, 1, 2] and spread["n_seeds"] == 3
    gain = spread["conditional_minus_mixture_db"]["1"]
    assert gain["values"] == [0.5, 1.0, 1.5] and gain["mean"] == pytest.approx(1.0)
    assert gain["std"] == pytest.approx(0.5)  # sample std (ddof 1) of 0.5, 1, 1.5
    assert spread["oracle_single_minus_mixture_on_y0_db"]["0.1"]["mean"] == pytest.approx(1.0)
    assert spread["conditional_share_of_oracle_gain_on_y0"]["1"]["values"] == pytest.approx([0.5, 1.0, 1.5])
    assert spread["output_psnr_db.single"]["1"]["mean"] == pytest.approx(21.0), "single: on its own class only"
    one = summary.seed_spread({0: _fake_sweep(0.5)})
    assert one["conditional_minus_mixture_db"]["1"] == {"mean": 0.5, "std": None, "values": [0.5]}
    assert spread["wrong_conditioning_cost_db"]["1"]["values"] == [3.0, 3.5, 4.0]  # 20 + offset - mean(18, 17)
    sw = _fake_sweep(0.5)
    sw.loc[(sw.model == "conditional") & (sw.conditioning == "exemplar") & (sw.cls == "c1"), "output_psnr"] = 19.0
    assert summary.per_class_gain(sw, 1.0) == {"c0": 0.5, "c1": -1.0}
    share = summary.seed_spread({0: sw})["conditional_share_of_oracle_gain_on_y0"]["1"]["mean"]
    assert share == pytest.approx(0.5), "the share reads y0's crops only (all crops: -0.25)"
    assert summary.per_class_gains(sw) == {"sigma=1": {"c0": 0.5, "c1": -1.0}}
    wide = pd.concat([sw, sw.assign(sigma=3.0, output_psnr=sw.output_psnr + (sw.model == "conditional"))])
    assert summary.per_class_gains(wide) == {"sigma=1": {"c0": 0.5, "c1": -1.0}, "sigma=3": {"c0": 1.5, "c1": 0.0}}
    assert summary.per_class_gains(wide[wide.sigma != 1.0]) == {"sigma=3": {"c0": 1.5, "c1": 0.0}}
    curves = summary.curves_by_seed({0: _fake_sweep(0.5), 4: _fake_sweep(1.0)})
    assert sorted(curves.seed.unique()) == [0, 4] and len(curves) == 2 * len(summary.psnr_gain(_fake_sweep(0)))


def _fake_set_metrics(accuracy: float, kid: float) -> pd.DataFrame:
    """The rows an evaluation writes for the conditional and mixture sets (c2f), and a decoy:
    the same metric under another extractor, which the spread must not read."""
    rows = []
    for set_name, acc in (("conditional", accuracy), ("mixture", None)):
        if acc is not None:
            rows.append(dict(set=set_name, variant="c2f", param=0, metric="accuracy", value=acc, n_samples=8,
                             n_real=0, extractor=None))
        rows.append(dict(set=set_name, variant="c2f", param=0, metric="kid", value=99.0, n_samples=8, n_real=16,
                         extractor="inception"))
        for m, v in (("kid", kid), ("fid", 10 * kid), ("precision", 0.5), ("recall", 0.25)):
            rows.append(dict(set=set_name, variant="c2f", param=0, metric=m, value=v, n_samples=8, n_real=16,
                             extractor="fgsd-classifier"))
        rows.append(dict(set=set_name, variant="c2f", param=0, metric="judged_synthetic", value=0.5, n_samples=8,
                         n_real=0, extractor=None))
    for variant, cls, acc, synth in (("ddim", "x", 0.9, 0.9), ("c2f", "x", 2 * accuracy, 0.0), ("c2f", "y", 0.0, 0.75)):
        for metric, value in (("accuracy", acc), ("judged_synthetic", synth)):  # per class; the ddim rows: a decoy
            rows.append(dict(set="conditional", variant=variant, param=0, metric=f"{metric}.{cls}", value=value,
                             n_samples=4, n_real=0, extractor=None))
    return pd.DataFrame(rows)


def test_sample_seed_spread_reads_each_seeds_own_metrics():
    spread = summary.sample_seed_spread({0: _fake_set_metrics(0.25, 1.0), 3: _fake_set_metrics(0.5, 2.0)})
    assert spread["seeds"] == [0, 3] and spread["n_seeds"] == 2
    acc = spread["conditional"]["accuracy"]
    assert acc["values"] == [0.25, 0.5] and acc["mean"] == pytest.approx(0.375) and acc["n_samples"] == 8
    assert acc["std"] == pytest.approx(np.std([0.25, 0.5], ddof=1))
    assert spread["mixture"]["kid"]["values"] == [1.0, 2.0], "the in-domain extractor's KID, not another's"
    assert "accuracy" not in spread["mixture"] and "by_class" not in spread["mixture"]
    by_class = spread["conditional"]["by_class"]  # each class's numbers of the c2f samples, seed by seed
    assert by_class["x"]["accuracy"]["values"] == [0.5, 1.0] and by_class["x"]["judged_synthetic"]["values"] == [0, 0]
    assert by_class["y"]["judged_synthetic"]["mean"] == pytest.approx(0.75) and set(by_class) == {"x", "y"}
    assert summary.sample_seed_spread({0: _fake_set_metrics(0.25, 1.0)})["conditional"]["kid"]["std"] is None


def _fake_features(seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Separation and density tables of one seed over three classes with known answers: the
    density distance rises with the centroid distance (Spearman 1) except at seed 2, where the
    order of two pairs is swapped (Spearman 0.5); the pair x-y is merged (ratio 0.5) at seeds 1, 2.
    The centroid distance is 3/4 block enc3 and 1/4 block dec2 (summed over pairs), dec2 the matched
    block, whose distances rank the pairs otherwise (Spearman 0.5 against seed 0's KL). Seed 1's
    rows come in reverse order (seeds are compared pair by pair, not row by row)."""
    pairs = [("x", "y"), ("x", "z"), ("y", "z")]
    sq, matched = np.array([1.0, 2.0, 4.0]), np.array([0.5, 0.25, 1.0])
    kl = np.array([1.0, 3.0, 2.0]) if seed == 2 else np.array([1.0, 2.0, 3.0])
    dens = pd.DataFrame(dict(cls_a=[a for a, _ in pairs], cls_b=[b for _, b in pairs], centroid_sqdist=sq,
                             centroid_sqdist_matched=matched, centroid_sqdist_enc3=sq - matched,
                             centroid_sqdist_dec2=matched,
                             centroid_sqdist_mixture=sq[::-1], sym_kl=kl - (seed == 1) * 1.5,
                             sym_kl_diff_form=kl, sym_kl_half_min=kl, sym_kl_double_min=kl))
    dens = dens.iloc[::-1] if seed == 1 else dens
    ratio = [0.5 if seed else 2.0, 3.0, 4.0]
    sep = pd.DataFrame([dict(model=m, layer=layer, cls_a=a, cls_b=b, ratio=r * (1 + (m == "conditional")))
                        for m in ("mixture", "conditional") for layer in ("mid", "all") for (a, b), r in zip(pairs, ratio)])
    return sep, dens


def test_feature_seeds_spread_the_separation_and_density_numbers(tmp_path):
    paths = {}
    for seed in (0, 1, 2):
        sep, dens = _fake_features(seed)
        paths[seed] = (tmp_path / f"sep{seed}.csv", tmp_path / f"dens{seed}.csv")
        sep.to_csv(paths[seed][0], index=False), dens.to_csv(paths[seed][1], index=False)
    cfg = {"seed": 0, "train": {"replicate_seeds": [1, 2]}}
    summary.feature_seeds(cfg, *paths[0], f"{paths[1][0]},{paths[2][0]}", f"{paths[1][1]},{paths[2][1]}",
                          tmp_path / "t.csv", tmp_path / "s.json")
    out = files.load_json(tmp_path / "s.json")
    assert out["seeds"] == [0, 1, 2]
    rho = out["density.mse_gap.spearman"]
    assert rho["values"] == pytest.approx([1.0, 1.0, 0.5]) and rho["std"] == pytest.approx(np.std([1, 1, 0.5], ddof=1))
    assert out["density.mse_gap.n_negative"]["values"] == [0, 1, 0]  # seed 1's first pair: 1 - 1.5
    assert out["density.control_mixture_features.spearman"]["values"] == pytest.approx([-1.0, -1.0, -0.5])
    assert out["density.matched_blocks.spearman"]["values"] == pytest.approx([0.5, 0.5, -0.5])
    assert out["density.centroid_share.enc3"]["values"] == pytest.approx([0.75] * 3)
    assert out["density.centroid_share.dec2"]["values"] == pytest.approx([0.25] * 3)
    agree = out["seed_agreement"]  # seeds (0, 1), (0, 2), (1, 2): the KL order is swapped at seed 2 only
    assert agree["sym_kl"]["values"] == pytest.approx([1.0, 0.5, 0.5])
    assert agree["centroid_sqdist"]["values"] == pytest.approx([1.0, 1.0, 1.0])
    assert agree["centroid_sqdist_mixture"]["mean"] == pytest.approx(1.0)
    assert out["separation.conditional.mid.min_ratio"]["values"] == pytest.approx([4.0, 1.0, 1.0])
    assert out["separation.mixture.all.n_merged"]["values"] == [0, 1, 1]
    assert out["separation.mixture.all.median_ratio"]["values"] == pytest.approx([3.0, 3.0, 3.0])
    assert out["merged_pairs_seeds"] == {"mixture": {"mid": {"x | y": [1, 2]}, "all": {"x | y": [1, 2]}},
                                         "conditional": {"mid": {"x | y": [1, 2]}, "all": {"x | y": [1, 2]}}}
    table = pd.read_csv(tmp_path / "t.csv")
    assert set(table.seed) == {0, 1, 2} and len(table) == 3 * len(out) - 3 * 4  # but seeds, n_seeds, merged, agreement
    with pytest.raises(FgsdError, match="2 separation and 3 density"):
        summary.feature_seeds(cfg, *paths[0], str(paths[1][0]), f"{paths[1][1]},{paths[2][1]}",
                              tmp_path / "t.csv", tmp_path / "s.json")


def test_fig3_draws_each_panels_references_on_its_own_crops():
    # two classes of two crops, y0 = "a"; the references do well on "a" and badly on "b", so the
    # right panel (y0's crops) must draw other lines than the left one (all crops)
    from fgsd import figures
    cfg = {"seed": 0, "train": {"single": {"class": "a"}}}
    rows = []
    for sigma in (0.1, 1.0):
        for image, cls in enumerate("aabb"):
            inp = -20 * np.log10(sigma)
            for model, cond, out in (("mixture", "none", 20), ("conditional", "exemplar", 21),
                                     ("conditional", "y0-centroid", 21), ("single", "none", 22),
                                     ("trivial-mean", "none", 10 + image), ("gaussian-mixture", "none", 30 + image),
                                     ("gaussian-class", "class", 40 if cls == "a" else 5)):
                rows.append(dict(model=model, conditioning=cond, cls=cls, is_y0=cls == "a", sigma=sigma,
                                 image=image, input_psnr=inp, output_psnr=out + sigma))
    sweep = pd.DataFrame(rows)
    seeds = summary.curves_by_seed({0: sweep})
    fig = figures.fig3_axes(cfg, sweep, seeds)
    lines = [{line.get_label(): line for line in ax.get_lines()} for ax in fig.axes]
    x = -20 * np.log10(np.array([1.0, 0.1]))  # the input PSNR, ascending
    for panel, class_known, mixture_ref in ((0, [22.5, 22.5], [31.5, 31.5]), (1, [40, 40], [30.5, 30.5])):
        for name, expected in (("gaussian-class", class_known), ("gaussian-mixture", mixture_ref)):
            line = lines[panel][f"{name} (no training)"]
            np.testing.assert_allclose(line.get_xdata(), x)
            np.testing.assert_allclose(line.get_ydata(), np.array(expected) + np.array([1.0, 0.1]) - x)
    figures.plt.close(fig)
