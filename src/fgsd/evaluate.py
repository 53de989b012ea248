"""Sample quality: class accuracy under the in-domain classifier, torch-fidelity KID/FID/
precision/recall against held-out real crops, and a memorisation check. One job per sample set
(`stages.SAMPLE_SETS[...].evaluation` says how it is scored, so a new set needs no code here)
plus the reference group of real crops; every number is one tidy CSV row with its sample counts.
`join` gathers the groups into samples.csv and the headlines into samples.json.

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

from . import files, samples, stages
from .classifier import load_classifier, predict
from .data import labelled_crops, load_split
from .errors import FgsdError
from .runtime import resolve_device, to_float, to_uint8

log = logging.getLogger("fgsd")
EXTRACTOR = samples.EXTRACTOR
MIN_FIDELITY_SAMPLES = 4  # precision/recall's k = 3 neighbours need at least 4 samples


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
    """Per-image RMSE to its nearest neighbour in `pool` (both in [0, 1]). Differences are summed
    directly: cdist's default for more than 25 rows, |x|² + |y|² − 2x·y by matrix product, puts
    an exact copy of a 32×32 training crop at RMSE ~5e-4 instead of 0 (a memorisation check must
    see copies) and its last digits follow the BLAS code path."""
    p = pool.flatten(1)
    out = [torch.cdist(x[i:i + batch].flatten(1), p, compute_mode="donot_use_mm_for_euclid_dist").min(1).values
           for i in range(0, len(x), batch)]
    return torch.cat(out) / p.shape[1] ** 0.5


class Evaluator:
    """Holds the real crops, the classifier and the extractors; turns a group of samples into rows."""

    def __init__(self, cfg, data_dir, classifier_path, device):
        self.e, self.seed = cfg["evaluate"], cfg["seed"]
        self.device = resolve_device(device)
        self.clf, self.classes = load_classifier(classifier_path, self.device)
        self.synthetic = len(self.classes)  # the judge's "phase-randomised" prediction (if it was trained with one)
        self.train_x, self.train_y, _ = labelled_crops(data_dir, "train")
        self.test_x, self.test_y, _ = labelled_crops(data_dir, "test")
        self.n_seen = len(np.unique(load_split(data_dir, "train")["labels"]))
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

    def group(self, set_name, variant, param, images: np.ndarray, labels: np.ndarray, real_classes,
              cost: dict | None = None, memorisation=True, per_class=False):
        """Accuracy (when labelled; a sample the judge calls phase-randomised counts as wrong),
        class coverage, the fraction judged phase-randomised, the mean cost per sample (`samples.COST`
        columns the set has), fidelity metrics and memorisation of one group. per_class: also the
        accuracy and the fraction judged phase-randomised of each class (`accuracy.<class>`,
        `judged_synthetic.<class>`), so a class the samples miss is seen, not averaged away."""
        x = to_float(images)
        real = self.real(real_classes)
        n, add = len(x), lambda *a, **k: self.add(set_name, variant, param, *a, **k)
        _, pred = predict(self.clf, x, self.device)
        pred = pred.numpy()
        if (labels >= 0).all():
            add("accuracy", (pred == labels).mean(), n, 0)
            for c in np.unique(labels) if per_class else ():
                k = labels == c
                add(f"accuracy.{self.classes[c]}", (pred[k] == c).mean(), k.sum(), 0)
                add(f"judged_synthetic.{self.classes[c]}", (pred[k] == self.synthetic).mean(), k.sum(), 0)
        real_pred = pred[pred != self.synthetic]
        add("classes_covered", len(np.unique(real_pred)), n, 0)
        add("judged_synthetic", 1 - len(real_pred) / n, n, 0)
        for column, values in (cost or {}).items():
            add(column, np.mean(values), n, 0)
        if n < MIN_FIDELITY_SAMPLES:  # e.g. a rejection sampler's shortfall
            log.warning("%s %s %s: %d samples, too few for KID/FID/precision-recall (k = 3 neighbours); skipped",
                        set_name, variant, param, n)
        for name, weights in self.extractors if n >= MIN_FIDELITY_SAMPLES else []:
            for metric, value in fidelity(images, real, name, weights, self.e["kid_subset_size"], self.seed,
                                          self.device).items():
                add(metric, value, n, len(real), extractor=name)
        if not memorisation:
            return
        nn = nearest_rmse(x, self.train_x)
        add("nn_rmse_median", nn.median(), n, len(self.train_x))
        add("nn_rmse_median_test_crops", self.test_nn.median(), len(self.test_nn), len(self.train_x))
        add("frac_closer_than_test_p05", (nn < self.test_nn.quantile(0.05)).float().mean(), n, len(self.test_nn))


def reference(ev: Evaluator) -> None:
    """Real training crops of the seen classes against the same held-out crops: the floor the
    samples' fidelity numbers are read against."""
    pool = ev.train_x[ev.train_y < ev.n_seen]
    n = int((ev.test_y < ev.n_seen).sum())
    pick = torch.randperm(len(pool), generator=torch.Generator().manual_seed(ev.seed))[:n]
    real_train = to_uint8(pool[pick])
    ev.group(stages.REFERENCE, "train crops", 0, real_train, np.full(len(real_train), -1), range(ev.n_seen),
             memorisation=False)


def score_fidelity(ev: Evaluator, name: str, t: dict, spec: stages.Evaluation) -> None:
    """One fidelity group per value of the `spec.by` columns (variant: in order of appearance;
    param: sorted), against real crops of the seen classes or of the set's own labels."""
    real = range(ev.n_seen) if spec.real == "seen" else np.unique(t["label"])
    if spec.by == ("param",):
        keys = [(v,) for v in np.unique(t["param"])]
    else:
        keys = list(dict.fromkeys(zip(*(t[c].tolist() for c in spec.by)))) if spec.by else [()]
    for key in keys:
        k = np.ones(len(t["label"]), bool)
        for column, value in zip(spec.by, key):
            k &= t[column] == value
        variant = str(t["variant"][k][0])
        param = t["param"][k][0] if spec.by else 0
        ev.group(name, variant, param, t["images"][k], t["label"][k], real, {c: t[c][k] for c in samples.COST if c in t},
                 per_class=spec.per_class)


def score_pairs(ev: Evaluator, name: str, t: dict, spec: stages.Evaluation) -> None:
    """How often a sample of a class pair (a, b) is judged class b, and class a, per setting."""
    _, pred = predict(ev.clf, to_float(t["images"]), ev.device)
    for v in dict.fromkeys(t["variant"]):
        for p in np.unique(t["param"][t["variant"] == v]):
            k = (t["variant"] == v) & (t["param"] == p)
            ev.add(name, str(v), p, "frac_class_b", (pred.numpy()[k] == t["class_b"][k]).mean(), k.sum(), 0)
            ev.add(name, str(v), p, "frac_class_a", (pred.numpy()[k] == t["label"][k]).mean(), k.sum(), 0)


def score_roundtrip(ev: Evaluator, name: str, t: dict, spec: stages.Evaluation) -> None:
    ev.add(name, str(t["variant"][0]), 0, "roundtrip_rmse_median", np.median(t["roundtrip_rmse"]), len(t["label"]), 0)


def score_acceptance(ev: Evaluator, name: str, t: dict) -> None:
    """A rejection sampler's tries (`tried_*` arrays: every class and N, accepted or not), pooled
    over classes per N: accepted / proposals, proposals per accepted sample, and the shortfall
    (classes that got fewer samples than asked)."""
    for n in np.unique(t["tried_param"]):
        k = t["tried_param"] == n
        acc, prop = t["tried_accepted"][k].sum(), t["tried_proposals"][k].sum()
        ev.add(name, "d2c rejection", n, "acceptance_rate", acc / prop, int(acc), int(prop))
        ev.add(name, "d2c rejection", n, "proposals_per_accepted", prop / acc if acc else np.inf, int(acc), int(prop))
        ev.add(name, "d2c rejection", n, "accepted_samples", acc, int(acc), int(k.sum()))


SCORERS = {"fidelity": score_fidelity, "pairs": score_pairs, "roundtrip": score_roundtrip}


def evaluate(cfg: dict, name: str, data: str | Path, classifier: str | Path, table: str | Path,
             samples_npz: str | Path | None = None, device="auto") -> None:
    """Score evaluation group `name` (a sample set, or the real-crop reference) into `table`,
    written at full precision (`join` rounds once, for samples.csv)."""
    ev = Evaluator(cfg, data, classifier, device)
    if name == stages.REFERENCE:
        reference(ev)
    else:
        if samples_npz is None:
            raise FgsdError(f"evaluating sample set '{name}' needs samples_npz=<its npz>")
        spec = stages.SAMPLE_SETS[name].evaluation
        t = samples.load(samples_npz)
        if len(t["label"]):
            SCORERS[spec.how](ev, name, t, spec)
        if "tried_proposals" in t:
            score_acceptance(ev, name, t)
    frame = pd.DataFrame(ev.rows, columns=["set", "variant", "param", "metric", "value", "n_samples", "n_real",
                                           "extractor"])
    files.save_csv(table, frame, float_format=None)
    log.info("wrote %d metric rows to %s", len(frame), table)


def join(set_metrics: str, table: str | Path, headline_json: str | Path) -> None:
    """samples.csv (every group's rows, in the order given) and samples.json (the headlines)."""
    frame = samples.read_metrics(set_metrics.split(","))
    files.save_csv(table, frame)
    files.save_json(headline_json, samples.headline(frame))
    log.info("wrote %d metric rows to %s", len(frame), table)
