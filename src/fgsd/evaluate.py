"""Sample quality (issue 4 §5): class accuracy under the in-domain classifier, torch-fidelity
KID/FID/precision/recall against held-out real crops, and a memorisation check. Every number
goes to one tidy CSV row with its sample counts; headlines go to samples.json (-> summary.json).

The feature extractor is the pipeline's classifier, registered with torch-fidelity as
`fgsd-classifier`. Inception-v3 is used as well only when `evaluate.inception_weights` names a
local weights file; nothing is ever downloaded.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch_fidelity
from torch_fidelity import FeatureExtractorBase, register_feature_extractor
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

from . import files
from .classifier import labelled_crops, load_classifier, predict
from .errors import FgsdError
from .train import resolve_device, to_float, to_uint8

log = logging.getLogger("fgsd")
EXTRACTOR = "fgsd-classifier"


class InDomainExtractor(FeatureExtractorBase):
    """torch-fidelity's view of the classifier: uint8 B x 3 x H x W in, (features, logits) out."""

    def __init__(self, name, features_list, feature_extractor_weights_path=None, **kwargs):
        super().__init__(name, features_list)
        if not feature_extractor_weights_path:
            raise FgsdError("the in-domain extractor needs the classifier's model.pt")
        self.net, _ = load_classifier(feature_extractor_weights_path)
        self.channels = self.net.config["channels"]
        self.requires_grad_(False)
        self.eval()

    @staticmethod
    def get_provided_features_list():
        return "features", "logits_unbiased"

    @staticmethod
    def get_default_feature_layer_for_metric(metric):
        return {"isc": "logits_unbiased", "fid": "features", "kid": "features", "prc": "features"}[metric]

    @staticmethod
    def can_be_compiled():
        return False

    @staticmethod
    def get_dummy_input_for_compile():
        return torch.zeros(1, 3, 32, 32, dtype=torch.uint8)

    def forward(self, x):
        feat, logits = self.net(x[:, :self.channels].float() / 255)
        out = {"features": feat, "logits_unbiased": logits}
        return tuple(out[k] for k in self.features_list)


if EXTRACTOR not in FEATURE_EXTRACTORS_REGISTRY:
    register_feature_extractor(EXTRACTOR, InDomainExtractor)


class Images(torch.utils.data.Dataset):
    """uint8 N x C x H x W array -> the 3-channel uint8 tensors torch-fidelity reads."""

    def __init__(self, images: np.ndarray):
        self.x = torch.from_numpy(images)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        x = self.x[i]
        return x.expand(3, -1, -1).contiguous() if x.shape[0] == 1 else x


def fidelity(fake: np.ndarray, real: np.ndarray, extractor: str, weights: str | Path, kid_subset: int,
             seed: int, device) -> dict[str, float]:
    """KID (mean, std), FID, precision and recall of `fake` against `real` (uint8 arrays)."""
    m = torch_fidelity.calculate_metrics(
        input1=Images(fake), input2=Images(real), cuda=device.type == "cuda", feature_extractor=extractor,
        feature_extractor_weights_path=str(weights), fid=True, kid=True, prc=True,
        kid_subset_size=min(kid_subset, len(fake), len(real)), rng_seed=seed, cache=False, save_cpu_ram=True,
        verbose=False, batch_size=128)
    return dict(kid=m["kernel_inception_distance_mean"], kid_std=m["kernel_inception_distance_std"],
                fid=m["frechet_inception_distance"], precision=m["precision"], recall=m["recall"])


def nearest_rmse(x: torch.Tensor, pool: torch.Tensor, batch: int = 256) -> torch.Tensor:
    """Per-image RMSE to its nearest neighbour in `pool` (both in [0, 1])."""
    p = pool.flatten(1)
    out = [torch.cdist(x[i:i + batch].flatten(1), p).min(1).values for i in range(0, len(x), batch)]
    return torch.cat(out) / p.shape[1] ** 0.5


class Evaluator:
    """Holds the real crops, the classifier and the extractors; turns a group of samples into rows."""

    def __init__(self, cfg, data_dir, classifier_path, device):
        self.e, self.seed = cfg["evaluate"], cfg["seed"]
        self.device = resolve_device(device)
        self.clf, _ = load_classifier(classifier_path, self.device)
        self.train_x, self.train_y, _ = labelled_crops(data_dir, "train")
        self.test_x, self.test_y, _ = labelled_crops(data_dir, "test")
        self.extractors = [(EXTRACTOR, Path(classifier_path))]
        inception = self.e["inception_weights"]
        if inception:
            if not Path(inception).is_file():
                raise FgsdError(f"parameter 'evaluate.inception_weights' names a missing file: {inception}")
            self.extractors.append(("inception-v3-compat", Path(inception)))
        self.test_nn = nearest_rmse(self.test_x, self.train_x)
        self.rows: list[dict] = []

    def real(self, labels) -> np.ndarray:
        keep = torch.isin(self.test_y, torch.as_tensor(list(labels)))
        return to_uint8(self.test_x[keep])

    def add(self, set_name, variant, param, metric, value, n_samples, n_real, extractor=""):
        self.rows.append(dict(set=set_name, variant=variant, param=param, metric=metric, value=float(value),
                              n_samples=int(n_samples), n_real=int(n_real), extractor=extractor))

    def group(self, set_name, variant, param, images: np.ndarray, labels: np.ndarray, real_classes, nfe=None,
              memorisation=True):
        """Accuracy (when labelled), class coverage, fidelity metrics and memorisation of one group."""
        x = to_float(images)
        real = self.real(real_classes)
        n, add = len(x), lambda *a, **k: self.add(set_name, variant, param, *a, **k)
        _, pred = predict(self.clf, x, self.device)
        if (labels >= 0).all():
            add("accuracy", (pred.numpy() == labels).mean(), n, 0)
        add("classes_covered", len(np.unique(pred.numpy())), n, 0)
        if nfe is not None:
            add("nfe", np.mean(nfe), n, 0)
        for name, weights in self.extractors:
            for metric, value in fidelity(images, real, name, weights, self.e["kid_subset_size"], self.seed,
                                          self.device).items():
                add(metric, value, n, len(real), extractor=name)
        if not memorisation:
            return
        nn = nearest_rmse(x, self.train_x)
        add("nn_rmse_median", nn.median(), n, len(self.train_x))
        add("nn_rmse_median_test_crops", self.test_nn.median(), len(self.test_nn), len(self.train_x))
        add("frac_closer_than_test_p05", (nn < self.test_nn.quantile(0.05)).float().mean(), n, len(self.test_nn))


def evaluate(cfg: dict, samples_dir, data_dir, classifier_path, out_csv, out_json, device="auto") -> None:
    ev = Evaluator(cfg, data_dir, classifier_path, device)
    s = {k: files.load_npz(Path(samples_dir) / f"{k}.npz")
         for k in ("conditional", "mixture", "fewshot", "nfe", "interpolation", "mixing", "inversion")}
    n_seen = len(np.unique(s["conditional"]["label"]))
    seen = range(n_seen)
    pool = ev.train_x[ev.train_y < n_seen]
    pick = torch.randperm(len(pool), generator=torch.Generator().manual_seed(cfg["seed"]))[:int((ev.test_y < n_seen).sum())]
    real_train = to_uint8(pool[pick])
    ev.group("real", "train crops", 0, real_train, np.full(len(real_train), -1), seen,
             memorisation=False)  # the floor the samples' fidelity numbers can be read against
    for name in ("conditional", "mixture"):
        t = s[name]
        ev.group(name, "c2f", 0, t["images"], t["label"], seen, t["nfe"])
    f = s["fewshot"]
    for n in np.unique(f["param"]):
        k = f["param"] == n
        ev.group("fewshot", "c2f", n, f["images"][k], f["label"][k], np.unique(f["label"]), f["nfe"][k])
    t = s["nfe"]
    for v in dict.fromkeys(t["variant"]):
        k = t["variant"] == v
        ev.group("nfe", str(v), t["param"][k][0], t["images"][k], t["label"][k], seen, t["nfe"][k])
    for name in ("interpolation", "mixing"):  # how often the sample is judged to be class b
        t = s[name]
        _, pred = predict(ev.clf, to_float(t["images"]), ev.device)
        for v in dict.fromkeys(t["variant"]):
            for p in np.unique(t["param"][t["variant"] == v]):
                k = (t["variant"] == v) & (t["param"] == p)
                ev.add(name, str(v), p, "frac_class_b", (pred.numpy()[k] == t["class_b"][k]).mean(), k.sum(), 0)
                ev.add(name, str(v), p, "frac_class_a", (pred.numpy()[k] == t["label"][k]).mean(), k.sum(), 0)
    inv = s["inversion"]
    ev.add("inversion", "ddim-inversion", 0, "roundtrip_rmse_median", np.median(inv["roundtrip_rmse"]), len(inv["label"]), 0)
    table = pd.DataFrame(ev.rows)
    files.save_csv(out_csv, table)
    files.save_json(out_json, headline(table))
    log.info("wrote %d metric rows to %s", len(table), out_csv)


def headline(t: pd.DataFrame) -> dict:
    """The numbers summary.json carries, each beside its sample counts."""
    def pick(set_name, variant, metric, param=None, extractor=None):
        k = (t.set == set_name) & (t.variant == variant) & (t.metric == metric)
        if param is not None:
            k &= t.param == param
        if extractor is not None:
            k &= t.extractor == extractor
        r = t[k].iloc[0]
        return dict(value=float(r.value), n_samples=int(r.n_samples), n_real=int(r.n_real))
    out = {}
    for name in ("real", "conditional", "mixture"):
        variant = "train crops" if name == "real" else "c2f"
        out[name] = {m: pick(name, variant, m, extractor=EXTRACTOR) for m in ("kid", "fid", "precision", "recall")}
        out[name]["classes_covered"] = pick(name, variant, "classes_covered")
        if name != "real":
            out[name].update({m: pick(name, variant, m) for m in ("nn_rmse_median", "frac_closer_than_test_p05")})
    out["conditional"]["accuracy"] = pick("conditional", "c2f", "accuracy")
    out["nn_rmse_median_test_crops"] = pick("conditional", "c2f", "nn_rmse_median_test_crops")
    few = t[(t.set == "fewshot") & (t.metric == "accuracy")]
    out["fewshot_accuracy_by_n_exemplars"] = {str(int(r.param)): dict(value=float(r.value), n_samples=int(r.n_samples))
                                              for r in few.itertuples()}
    out["ddim_inversion_roundtrip_rmse"] = pick("inversion", "ddim-inversion", "roundtrip_rmse_median")
    return out
