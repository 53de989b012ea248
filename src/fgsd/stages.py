"""The tables of the pipeline, written once: stages, model kinds, sample sets and figures, with
the params keys each reads, the function that runs it and the files it takes. The Snakemake
rules, the DVC generator (through the DAG) and `python -m fgsd` all read them. Torch-free:
Snakemake imports this module at start-up.

A new sample set is one function in `generate.py` plus one `SAMPLE_SETS` line here; a new figure
is one function (named after its key) plus one `FIGURES` line.
"""
from __future__ import annotations

import ast
import functools
from dataclasses import dataclass, field, replace
from pathlib import Path

SRC = Path(__file__).resolve().parent

MODEL_KINDS = ("mixture", "conditional", "single")
SPLITS = ("train", "test", "unseen")   # the data stage writes <split>.npz for each, and the manifest
MANIFEST = "manifest.json"
DATA_FILES = (*(f"{split}.npz" for split in SPLITS), MANIFEST)

# Where things live. Rules fill in the wildcards; stages get every path from their rule.
MODEL = "results/models/{kind}/model.pt"
PHI = "results/features/{kind}/phi.npz"
SAMPLES = "results/samples/{sample_set}.npz"
SET_METRICS = "results/metrics/sets/{group}.csv"
SWEEP = "results/analysis/sweep.csv"
SEPARATION = "results/analysis/separation.csv"
DENSITY = "results/analysis/density.csv"
CLASSIFIER = "results/models/classifier/model.pt"
GUIDE = "results/models/guide/model.pt"     # ADM-G's noise-aware classifier (never the judge)
D2C_AUTOENCODER = "results/models/d2c_autoencoder/model.pt"   # D2C stage 1
D2C_PRIOR = "results/models/d2c_prior/model.pt"                 # D2C stage 2: the latent diffusion prior
BASELINE_MODELS = ("d2c_prior",)  # model kinds a sample set may read besides MODEL_KINDS (trained by their own stage)
REPLICATE = "results/replicates/seed{rseed}"   # the models of one more training seed, and their sweep
REPLICATE_MODEL = REPLICATE + "/models/{kind}/model.pt"
REPLICATE_SWEEP = REPLICATE + "/sweep.csv"
REPLICATE_SAMPLES = REPLICATE + "/samples/{sample_set}.npz"
REPLICATE_SET_METRICS = REPLICATE + "/metrics/sets/{group}.csv"
REPLICATE_PHI = REPLICATE + "/features/{kind}/phi.npz"
REPLICATE_SEPARATION = REPLICATE + "/separation.csv"
REPLICATE_DENSITY = REPLICATE + "/density.csv"
FEATURE_SEEDS = "results/analysis/feature_seeds.json"  # `snakemake seeds`: Figs 4-5's numbers on every seed
FEATURE_SEEDS_TABLE = "results/analysis/feature_seeds.csv"
REPLICATED_SETS = ("conditional", "mixture")  # sample sets drawn again from every seed's models (their spread)
GAIN_BY_SEED = "results/analysis/psnr_gain_by_seed.csv"
SAMPLER_KEYS = tuple(f"sampling.{k}" for k in ("sigma0", "sigma_final", "stop_factor", "h0", "beta", "fixed_h",
                                                "max_steps"))


# The study (`snakemake study`, not in the main job): one setting = a number of classes and a crop scale.
STUDY = "results/study/{setting}"
STUDY_DATA = STUDY + "/data"
STUDY_RUN = STUDY + "/seed{sseed}"              # one training seed's models and PSNR table
STUDY_MODEL = STUDY_RUN + "/models/{kind}/model.pt"
STUDY_PSNR = STUDY_RUN + "/psnr.csv"
STUDY_KINDS = ("mixture", "conditional")
STUDY_GAIN = "results/study/gain.csv"
STUDY_FIGURE = "results/study/study_gain.pdf"
SETTING_PATTERN = r"k\d+_s[0-9.]+"


def study_settings(study: dict) -> list[str]:
    """The study's settings, k<classes>_s<scale>: the class axis at `class_axis_scale`, then the
    scale axis at `scale_axis_classes` (a setting on both axes once)."""
    pairs = [(k, study["class_axis_scale"]) for k in study["classes"]]
    pairs += [(study["scale_axis_classes"], s) for s in study["scales"]]
    return list(dict.fromkeys(f"k{k}_s{s:g}" for k, s in pairs))


def parse_setting(name: str) -> tuple[int, float]:
    """(number of classes, scale) of a setting name."""
    k, s = name.split("_")
    return int(k[1:]), float(s[1:])


# The architecture; `model.match` and `model.matching` are read by the conditional model alone, so
# changing them does not retrain the mixture and single-class models (stage_keys adds them for that kind).
MODEL_KEYS = ("model.widths", "model.enc_convs", "model.mid_convs", "model.dec_convs", "model.output", "model.bias",
              "model.upsample_bias")
TRAIN_KEYS = ("seed", "device", *MODEL_KEYS, "train.batch_size", "train.lr", "train.lr_schedule", "train.lr_decay_every",
              "train.lr_decay_factor", "train.ema", "train.compile", "train.precision",
              "train.sigma_max", "train.sigma_law", "train.sigma_min",
              "train.square_share", "train.loss_weight", "train.sigma_data", "train.checkpoint_every",
              "train.eval_every", "train.eval_crops_per_class", "sigmas")
# The training recipe: what the study's trainings read from `train` (the study sets the rest).
TRAIN_RECIPE = tuple(k for k in TRAIN_KEYS if k not in ("train.lr", "train.sigma_max", "train.eval_every",
                                                         "train.eval_crops_per_class", "sigmas"))


@dataclass(frozen=True)
class Stage:
    """One `python -m fgsd <stage>` command: `module.function(cfg?, [name], **paths, device?)`."""
    module: str
    function: str
    keys: tuple[str, ...] = ()      # dotted params keys it reads (it is handed only these)
    named: bool = False             # takes a name argument (model kind, sample set, figure, group)


STAGES = {
    "data": Stage("data", "prepare", ("seed", "data")),
    "train": Stage("train", "train", TRAIN_KEYS, named=True),
    "centroids": Stage("centroids", "compute", ("device", "features")),
    "sweep": Stage("analysis", "sweep", ("seed", "device", "sigmas", "analysis.batch_size", "train.single.class")),
    "separation": Stage("analysis", "separation"),
    "density": Stage("analysis", "density", ("seed", "device", "analysis.kl_sigma_min", "analysis.kl_sigma_max",
                                             "analysis.kl_n_sigmas", "analysis.kl_n_noise", "analysis.kl_max_pairs")),
    "summary": Stage("summary", "summary", ("seed", "train.replicate_seeds")),
    "feature_seeds": Stage("summary", "feature_seeds", ("seed", "train.replicate_seeds")),
    "sample": Stage("generate", "generate", ("seed", "device", *SAMPLER_KEYS), named=True),
    "guide": Stage("guide", "train_guide", ("seed", "device", "guide", "sampling.sigma0", "train.sigma_data",
                                             "train.precision")),
    "d2c_autoencoder": Stage("d2c", "train_autoencoder", ("seed", "device", "d2c", "train.precision")),
    "d2c_prior": Stage("d2c", "train_prior", ("seed", "device", "d2c", "sampling.sigma0", "train.precision")),
    "classifier": Stage("classifier", "train_classifier", ("seed", "device", "train.precision",
                                                          "evaluate.classifier_steps",
                                                          "evaluate.classifier_batch", "evaluate.classifier_lr",
                                                          "evaluate.classifier_width", "evaluate.phase_negatives",
                                                          "evaluate.feature_dim")),
    "evaluate": Stage("evaluate", "evaluate", ("seed", "device", "evaluate.kid_subset_size",
                                               "evaluate.inception_weights"), named=True),
    "sample_metrics": Stage("evaluate", "join"),
    "figure": Stage("figures", "draw", named=True),
    "provenance": Stage("provenance", "table"),
    "study_data": Stage("study", "prepare_setting", ("seed", "data.folder", "data.color", "data.crop_size",
                                                     "data.test_fraction", "data.dedup_corr", "data.pad_small",
                                                     "study.dataset", "study.min_size", "study.train_per_class",
                                                     "study.test_per_class")),
    "study_train": Stage("study", "train_setting", (*TRAIN_RECIPE, "study.steps", "study.sigma_max", "study.sigmas",
                                                     "study.test_per_class"), named=True),
    "study_eval": Stage("study", "evaluate_setting", ("seed", "device", "analysis.batch_size", "study.sigmas")),
    "study_report": Stage("study", "report", ("study",)),
}


@dataclass(frozen=True)
class Evaluation:
    """How `evaluate` scores a sample set. fidelity: accuracy, KID/FID/precision/recall and
    memorisation per group of rows (grouped by `by`; real crops of the seen classes, or of the
    set's own labels); pairs: how often samples are judged class a or class b, per (variant,
    param); roundtrip: the median DDIM inversion round-trip error. per_class: fidelity groups
    also get each class's judge accuracy and fraction judged phase-randomised."""
    how: str = "fidelity"
    by: tuple[str, ...] = ()
    real: str = "seen"
    per_class: bool = False


@dataclass(frozen=True)
class SampleSet:
    function: str                   # generate.<function>(ctx) -> samples.table(...)
    seed_id: int                    # its noise-seed stream: fixed forever, so adding a set moves no other set
    model: str                      # the model kind it samples from
    keys: tuple[str, ...] = ()      # sampling.* keys beyond SAMPLER_KEYS (a dotted key: that key itself)
    evaluation: Evaluation = field(default_factory=Evaluation)
    inputs: dict[str, str] = field(default_factory=dict)  # argument -> file, beyond the model and the data


SAMPLE_SETS = {  # in the order their metrics appear in samples.csv
    "conditional": SampleSet("set_conditional", 0, "conditional", ("per_class", "exemplars"),
                             Evaluation(per_class=True)),
    "mixture": SampleSet("set_mixture", 1, "mixture", ("per_class",)),
    "fewshot": SampleSet("set_fewshot", 4, "conditional", ("fewshot_n", "fewshot_per_n"),
                         Evaluation(by=("param",), real="own")),
    "nfe": SampleSet("set_nfe", 5, "conditional",
                     ("nfe_per_class", "nfe_betas", "ddim_steps", "ddim_eta", "ddim_spacing", "ddim_init", "exemplars"),
                     Evaluation(by=("variant",))),
    "interpolation": SampleSet("set_interpolation", 2, "conditional",
                               ("pairs", "per_pair", "alphas", "exemplars", "inversion_steps", "ddim_spacing"),
                               Evaluation("pairs")),
    "mixing": SampleSet("set_mixing", 3, "conditional", ("pairs", "per_pair", "mixing_sigmas", "exemplars"),
                        Evaluation("pairs")),
    "inversion": SampleSet("set_inversion", 6, "conditional",
                           ("inversion_steps", "inversion_per_class", "ddim_spacing", "exemplars"),
                           Evaluation("roundtrip")),
    "guidance": SampleSet("set_guidance", 7, "mixture",
                          ("guidance_scales", "guidance_per_class", "guidance_ddim_steps", "guidance_sigma_from",
                           "ddim_spacing", "ddim_init"),
                          Evaluation(by=("variant", "param")), inputs={"guide": GUIDE}),
    "d2c": SampleSet("set_d2c", 8, "d2c_prior", ("per_class", "d2c_steps", "ddim_eta", "ddim_spacing"),
                     inputs={"autoencoder": D2C_AUTOENCODER}),
    "d2c_fewshot": SampleSet("set_d2c_fewshot", 9, "d2c_prior",
                             ("fewshot_n", "fewshot_per_n", "d2c_steps", "d2c_cap", "d2c_unlabelled", "ddim_eta",
                              "ddim_spacing", "d2c.probe_l2", "d2c.protocol"),
                             Evaluation(by=("param",), real="own"), inputs={"autoencoder": D2C_AUTOENCODER}),
    "fewshot_seen": SampleSet("set_fewshot_seen", 10, "conditional", ("fewshot_n", "fewshot_per_n",
                                                                      "fewshot_seen_classes"),
                              Evaluation(by=("param",), real="own")),
    "d2c_fewshot_seen": SampleSet("set_d2c_fewshot_seen", 11, "d2c_prior",
                                  ("fewshot_n", "fewshot_per_n", "fewshot_seen_classes", "d2c_steps", "d2c_cap",
                                   "d2c_unlabelled", "ddim_eta", "ddim_spacing", "d2c.probe_l2", "d2c.protocol"),
                                  Evaluation(by=("param",), real="own"), inputs={"autoencoder": D2C_AUTOENCODER}),
}
REFERENCE = "real"  # the evaluation group of real training crops: the floor sample metrics are read against
EVAL_GROUPS = (REFERENCE, *SAMPLE_SETS)
HEADLINE_GROUPS = (REFERENCE, "conditional", "mixture", "fewshot", "inversion", "nfe", "guidance", "d2c",
                   "d2c_fewshot", "fewshot_seen", "d2c_fewshot_seen")  # what summary.json quotes


def set_metrics(*groups: str) -> dict[str, str]:
    return {g: SET_METRICS.format(group=g) for g in groups}


@dataclass(frozen=True)
class Figure:
    module: str                     # the function is <module>.<figure key>
    inputs: dict[str, str | list[str]]  # argument -> file (a list: comma-separated files)
    caption: str
    keys: tuple[str, ...] = ()
    data: bool = False              # also takes the data directory


def _kinds(*kinds):
    return {k: MODEL.format(kind=k) for k in kinds}


FIGURES = {
    "fig2_denoising_grid": Figure(
        "figures", _kinds("conditional", "mixture"), keys=("seed", "analysis.fig2_sigmas"), data=True,
        caption="**Fig 2: feature-guided denoising.** Rows: noisy test crops of four classes. Top row (green): one "
        "conditioning exemplar per class, another test crop of that class. Grid: the conditional denoiser's output "
        "for each (noisy crop, exemplar) pair; the diagonal (red) is correct conditioning. Right column (orange): "
        "the mixture denoiser. One panel per noise level (``analysis.fig2_sigmas``, on the [0,1] scale)."),
    "fig3_psnr_gain": Figure(
        "figures", {"sweep": SWEEP, "by_seed": GAIN_BY_SEED}, keys=("seed", "train.single.class"),
        caption="**Fig 3: denoising gain vs noise level.** Output PSNR minus input PSNR (dB) against input PSNR "
        "(-20 log10 σ), averaged over the test crops of every class. Left: the "
        "conditional model conditioned on another crop of the same class vs the mixture model, and (grey) three "
        "denoisers that need no training, fitted to the training crops and given the true σ: the noisy crop's "
        "mean, the exact MMSE denoiser of a mixture of stationary Gaussian classes (class unknown), and the "
        "Wiener denoiser of the crop's own class (class known); the lines are the mean over the training seeds "
        "(``seed`` and ``train.replicate_seeds``) and the bands ± one std over seeds (with one seed: 95 % bootstrap "
        "bands over test crops, which are correlated). Right (``seed``'s models, bootstrap bands): the "
        "conditional model conditioned on class y0 (its centroid) vs a denoiser trained on y0 only, on crops of y0 "
        "(correct) and of the other classes (incorrect conditioning / wrong class)."),
    "fig4_separation": Figure(
        "figures", {"separation": SEPARATION, "phi_mixture": PHI.format(kind="mixture"),
                    "phi_conditional": PHI.format(kind="conditional")}, data=True,
        caption="**Fig 4: concentration and separation of the features.** Top row: mixture model; bottom row: "
        "conditional model (features w ⊙ φ). Left: histogram over class pairs of the squared distance between "
        "class centroids ‖φ_y − φ_y'‖² (orange) and of the geometric mean √(v_y v_y') of the within-class "
        "variances (grey), training crops, all layers. Middle: per-layer separation ratio r_l, the median over "
        "class pairs of ‖φ_y,l − φ_y',l‖² / √(v_y,l v_y',l); above 1 means the class clouds are further apart than "
        "they are wide. Right: the mid-layer components of φ(x1) against φ(x2) for crops x1, x2 of two classes; "
        "points on the diagonal mean the two crops have the same features."),
    "fig5_density_distance": Figure(
        "figures", {"density": DENSITY}, data=True,
        caption="**Fig 5: density distance vs centroid distance.** Each point is a class pair. y: the symmetrised "
        "KL divergence estimated through the conditional denoiser, ∫ σ⁻³ [MSE with the wrong centroid − MSE with "
        "the correct centroid] dσ on a log grid over the training range of σ, summed both ways. x: the squared "
        "distance between the two class centroids. Pearson and Spearman correlations in the title. Left and right: "
        "one crop of each class of the three pairs with the smallest (red) and largest (blue) estimated distance."),
    "fig6_samples": Figure(
        "sample_figures", {"conditional": SAMPLES.format(sample_set="conditional"),
                           "mixture": SAMPLES.format(sample_set="mixture"), "metrics": SET_METRICS.format(
                               group="conditional")},
        keys=("sampling.exemplars", "sampling.beta", "sampling.h0"), data=True,
        caption="**Fig 6: samples per class.** Left: training crops of each seen class. Middle: feature-guided "
        "samples (Algorithm B: the coarse-to-fine sampler with the conditional denoiser, its matched block means set "
        "to the class centroid, ``sampling.exemplars`` crops, 0 = all). The title gives the in-domain classifier's "
        "accuracy on them with the sample count. Right: samples of the mixture (unconditional) denoiser with the "
        "same sampler; its rows are not classes."),
    "fig7_interpolation": Figure(
        "sample_figures", {"interpolation": SAMPLES.format(sample_set="interpolation"),
                           "mixing": SAMPLES.format(sample_set="mixing")}, data=True,
        caption="**Fig 7: interpolation and class mixing.** Left (Algorithm C): samples conditioned on "
        "φ_α = (1-α) φ_a + α φ_b, the same noise seed along each row; the last row of a pair is the DDIM baseline: "
        "the DDIM latents of one real crop of each class, slerp-interpolated and decoded with φ_α. Right "
        "(Algorithm C'): conditioned on class a while the estimated noise level is above s and on class b below "
        "it: s = 0 gives class a, s = σ0 class b, in between coarse structure from a and fine detail from b."),
    "fig8_fewshot": Figure(
        "sample_figures", {"fewshot": SAMPLES.format(sample_set="fewshot"),
                           "metrics": SET_METRICS.format(group="fewshot")}, data=True,
        caption="**Fig 8: few-shot classes.** For each held-out class (never seen in training): real crops from "
        "its held-out region, then samples whose centroid was computed from N of its crops "
        "(``sampling.fewshot_n``). The title gives the classifier accuracy per N with sample counts."),
    "fig9_quality_nfe": Figure(
        "sample_figures", {"metrics": SET_METRICS.format(group="nfe"),
                           "reference": SET_METRICS.format(group=REFERENCE)}, keys=("sampling.ddim_eta",),
        caption="**Fig 9: sample quality vs cost.** Conditional samples (same classes, centroids and seeds) from "
        "the coarse-to-fine sampler at several β and from DDIM at several step counts, against network evaluations "
        "per sample. DDIM starts from the class's noisy stationary-Gaussian fit, or from the mixture's (the start "
        "knows no class: like-for-like with unconditional and classifier-guided DDIM). "
        "Left: KID with the pipeline's in-domain classifier features against held-out test crops "
        "(error bars: std over KID subsets; dashed: real training crops against the same test crops). Right: "
        "classifier accuracy. Dotted: draws of each class's stationary-Gaussian fit with no network at all, "
        "which is DDIM's start (``sampling.ddim_init: gaussian``) without its noise: DDIM is read against it."),
    "fig10_guidance": Figure(
        "sample_figures", {"guidance": SAMPLES.format(sample_set="guidance"),
                           "metrics": [SET_METRICS.format(group=g) for g in (REFERENCE, "guidance", "conditional",
                                                                             "nfe")],
                           "guide_log": "results/models/guide/train_log.csv"}, data=True,
        caption="**Fig 10: feature guidance vs classifier guidance (ADM-G).** Top left and middle: judge accuracy "
        "(the pipeline's independent clean classifier) and class-marginal KID (in-domain features, against held-out "
        "crops of the seen classes) against the cost per sample in GFLOP (torch's FLOP counter: denoiser calls plus, "
        "for ADM-G, the guide's forward and backward pass at every step). Lines: ADM-G, the mixture denoiser "
        "guided by a noise-aware classifier at scales ``sampling.guidance_scales`` (s = 0 is the mixture model) "
        "through coarse-to-fine and DDIM (η = 0, 1); stars: feature guidance (the conditional denoiser) with its "
        "default sampler and the quality-vs-cost settings of Fig 9. ADM-G has no unseen-class point: its guide "
        "knows only its training classes. Top right: the guide's accuracy on noisy held-out crops per σ band. "
        "Bottom: ADM-G samples, the same seeds at every scale."),
    "fig11_fewshot_baselines": Figure(
        "sample_figures", {"fewshot": SAMPLES.format(sample_set="fewshot"),
                           "d2c_fewshot": SAMPLES.format(sample_set="d2c_fewshot"),
                           "metrics": [SET_METRICS.format(group=g) for g in ("fewshot", "d2c_fewshot", "fewshot_seen",
                                                                             "d2c_fewshot_seen")]}, data=True,
        caption="**Fig 11: few-shot classes, feature guidance vs D2C.** For the held-out classes, from the same N "
        "exemplars (``sampling.fewshot_n``): FGSD's centroid of the N exemplars vs D2C's rejection sampling "
        "(prior draws of its contrastive autoencoder's latents, accepted with the probability a latent "
        "classifier gives, N exemplars against unlabelled training latents; at most ``sampling.d2c_cap`` "
        "proposals per wanted sample). Left: judge accuracy (the independent classifier) per N, with sample "
        "counts; light lines: the same for seen classes (``sampling.fewshot_seen_classes``), which both models "
        "were trained on. Middle: D2C's acceptance rate per N (pooled over classes). Right: KID against held-out crops "
        "of the same classes. Bottom: real crops of each held-out class, then FGSD and D2C samples per N (an "
        "empty row: nothing accepted)."),
}


def stage_names() -> dict[str, tuple[str, ...]]:
    """The names each named stage takes (`python -m fgsd <stage> <name>`)."""
    return {"train": MODEL_KINDS, "study_train": STUDY_KINDS, "sample": tuple(SAMPLE_SETS), "figure": tuple(FIGURES),
            "evaluate": EVAL_GROUPS}


def fine_tunes_mixture(kind: str, cfg: dict) -> bool:
    """Whether model `kind` starts from its seed's mixture model (`train.<kind>.init: mixture`)."""
    return kind in ("single", "conditional") and cfg["train"][kind]["init"] == "mixture"


def warm_start(kind: str, cfg: dict, rseed: str | None = None) -> dict[str, str]:
    """A training job's `init` input: the same seed's mixture model when `fine_tunes_mixture`,
    else nothing."""
    if not fine_tunes_mixture(kind, cfg):
        return {}
    return {"init": (MODEL if rseed is None else REPLICATE_MODEL).format(kind="mixture", rseed=rseed)}


def stage_keys(stage: str, name: str | None = None) -> list[str]:
    """The params keys that `stage` (for model kind, sample set or figure `name`) reads."""
    keys = list(STAGES[stage].keys)
    if stage == "train":
        keys += [f"train.{name}", *(["model.match", "model.matching"] if name == "conditional" else [])]
    elif stage == "study_train":  # each kind its own rate (and the conditional one its matched blocks)
        keys += [f"study.lr.{name}", *(["study.match", "model.matching"] if name == "conditional" else [])]
    elif stage == "sample":
        keys += [k if "." in k else f"sampling.{k}" for k in SAMPLE_SETS[name].keys]
    elif stage == "figure":
        keys += FIGURES[name].keys
    return keys


def function_of(stage: str, name: str | None = None) -> tuple[str, str]:
    """(module, function) that runs `stage` (a figure runs its own function)."""
    if stage == "figure":
        return FIGURES[name].module, name
    return STAGES[stage].module, STAGES[stage].function


def spec(stage: str, name: str | None = None) -> str:
    """The rows of these tables one job depends on. Rules carry it as a param, so editing a row
    re-runs its jobs, and adding or editing another row re-runs nothing else (this module is
    therefore left out of the jobs' code files). A sample set's sampling job leaves out how the
    set is scored: that is its evaluation job's row."""
    rows: list = [STAGES[stage]]
    if stage == "sample":
        rows.append(replace(SAMPLE_SETS[name], evaluation=None))
    elif stage == "evaluate" and name in SAMPLE_SETS:
        rows.append(SAMPLE_SETS[name].evaluation)
    elif stage == "figure":
        rows.append(FIGURES[name])
    return repr(rows)


# --- code dependencies -----------------------------------------------------------------------
ENTRY = ("__main__", "config", "errors", "files", "provenance")  # what every command runs
TABLES = "stages"  # tracked row by row through `spec`, not as a code file


@functools.cache
def _imports(module: str) -> frozenset[str]:
    """fgsd modules that `module` imports (at top level or inside functions)."""
    tree = ast.parse((SRC / f"{module}.py").read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.level == 1 or (node.module or "").startswith("fgsd")):
            base = (node.module or "").removeprefix("fgsd").lstrip(".")
            if base:
                found.add(base.split(".")[0])
            else:
                found.update(a.name for a in node.names)
    return frozenset(m for m in found if (SRC / f"{m}.py").is_file())


def code_modules(module: str) -> list[str]:
    """`module` and every fgsd module it imports, transitively, plus the command-line entry."""
    seen, todo = set(), [module, *ENTRY]
    while todo:
        m = todo.pop()
        if m not in seen and m != TABLES:
            seen.add(m)
            todo.extend(_imports(m))
    return sorted(seen)


def code_files(stage: str, name: str | None = None) -> list[str]:
    """The library files a job runs, as paths relative to the repository root: editing one re-runs
    the job (Snakemake's code trigger sees only the rule body, not the modules it imports)."""
    return [f"src/fgsd/{m}.py" for m in code_modules(function_of(stage, name)[0])]
