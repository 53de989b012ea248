"""The orchestration: Snakemake runs the smoke chain, re-runs nothing when nothing changed and only
the affected jobs when a param changes; dvc.yaml matches the DAG and `dvc repro` runs it."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import ROOT

from fgsd import config, files, stages, summary

BIN = Path(sys.executable).parent
ENV = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}", DVC_NO_ANALYTICS="1",
           GIT_AUTHOR_NAME="fgsd-test", GIT_AUTHOR_EMAIL="test@fgsd", GIT_COMMITTER_NAME="fgsd-test",
           GIT_COMMITTER_EMAIL="test@fgsd")
SMOKE = ["--configfile", "config/smoke.yaml"]


def run(cmd: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    """Run in a copy of the repository with that copy's library on the path (not the installed one)."""
    proc = subprocess.run(cmd, cwd=cwd, env=dict(ENV, PYTHONPATH=str(Path(cwd) / "src")), capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def copy_repo(dest: Path) -> Path:
    for name in ("Snakefile", "params.yaml", "dvc.yaml", ".dvcignore", ".gitignore", "pyproject.toml"):
        shutil.copy2(ROOT / name, dest / name)
    for name in ("config", "workflow", "src", ".dvc"):
        shutil.copytree(ROOT / name, dest / name, ignore=shutil.ignore_patterns("__pycache__", "tmp", "cache"))
    return dest


def planned_jobs(cwd: Path, extra: list[str]) -> dict[str, int]:
    """Job counts Snakemake would run now (dry run)."""
    out = run(["snakemake", "-n", "--quiet", "rules", *extra], cwd).stdout
    counts = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit() and parts[0] not in ("job", "total"):
            counts[parts[0]] = int(parts[1])
    return counts


def test_dvc_yaml_matches_the_snakemake_dag():
    run([sys.executable, "-m", "fgsd.dvcgen", "--check"], ROOT)


def test_dvc_yaml_check_catches_drift(tmp_path):
    repo = copy_repo(tmp_path)
    text = (repo / "dvc.yaml").read_text().replace("train single init=", "train single  init=")
    (repo / "dvc.yaml").write_text(text)
    proc = run([sys.executable, "-m", "fgsd.dvcgen", "--check"], repo, check=False)
    assert proc.returncode != 0 and "out of date" in proc.stderr


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    repo = copy_repo(tmp_path_factory.mktemp("smoke"))
    run(["snakemake", "--cores", "2", *SMOKE], repo)
    return repo


def test_smoke_chain_produces_every_output(smoke_run):
    repo = smoke_run
    manifest = files.load_json(repo / "results/data/pip-textures/manifest.json")
    assert len(manifest["classes"]) == 11
    for kind in stages.MODEL_KINDS:
        for name in ("model.pt", "train_log.csv", "config.json", "metrics.json"):
            assert (repo / f"results/models/{kind}/{name}").is_file()
        assert (repo / f"results/features/{kind}/centroids.csv").is_file()
        assert (repo / f"results/benchmarks/train_{kind}.tsv").is_file()
        assert "trained" in (repo / f"results/logs/train_{kind}.log").read_text()
    assert not any((repo / "results/.state").glob("*.pt")), "finished runs leave no resumable state"
    for name in ("fig2_denoising_grid", "fig3_psnr_gain", "fig4_separation", "fig5_density_distance",
                 "fig6_samples", "fig7_interpolation", "fig8_fewshot", "fig9_quality_nfe", "fig10_guidance",
                 "fig11_fewshot_baselines"):
        for ext in ("pdf", "png"):
            assert (repo / f"results/figures/{name}.{ext}").stat().st_size > 1000
    for name in ("conditional", "mixture", "interpolation", "mixing", "fewshot", "nfe", "inversion", "guidance", "d2c"):
        assert len(files.load_npz(repo / f"results/samples/{name}.npz")["images"]) > 0
    tried = files.load_npz(repo / "results/samples/d2c_fewshot.npz")["tried_proposals"]
    assert len(tried) == 2 * 2 and (tried > 0).all(), "D2C tries every held-out class at every N"
    assert files.load_json(repo / "results/models/d2c_autoencoder/metrics.json")["test_psnr"] > 0
    summary = files.load_json(repo / "results/metrics/summary.json")
    assert set(summary) >= {"psnr_gain_conditional_minus_mixture_db", "separation_median_ratio",
                            "density_vs_centroid_distance", "sample_quality", "classifier"}
    assert summary["separation_median_ratio"]["conditional"]["mid"] > 0
    assert set(summary["per_class_gain_db"]) == {"sigma=1"}  # and the sweep's largest sigma, when it is above 1
    q = summary["sample_quality"]
    assert q["conditional"]["kid"]["n_samples"] == 11 * 2 and q["conditional"]["kid"]["n_real"] == 11 * 8
    assert 0 <= q["conditional"]["accuracy"]["value"] <= 1 and set(q["fewshot_accuracy_by_n_exemplars"]) == {"1", "5"}
    table = pd.read_csv(repo / "results/metrics/samples.csv")
    assert {"set", "variant", "param", "metric", "value", "n_samples", "n_real", "extractor"} <= set(table.columns)
    assert set(table[table.set == "nfe"].variant) == {"c2f beta=0.5", "ddim 5", "ddim 10", "gaussian fit",
                                                      "ddim 5 mixture start", "ddim 10 mixture start"}
    assert {r["method"] for r in summary["method_comparison"]} == {"mixture model", "ADM-G", "FGSD", "D2C (strict)"}
    assert 0 <= summary["guide"]["accuracy"] <= 1 and (repo / "results/benchmarks/seconds_guidance.csv").is_file()
    seeds = summary["seeds"]  # the smoke preset trains one replicate seed
    assert seeds["seeds"] == [0, 1] and len(seeds["conditional_minus_mixture_db"]["1"]["values"]) == 2
    assert (repo / "results/replicates/seed1/models/conditional/model.pt").is_file()
    spread = summary["sample_quality_seeds"]  # FGSD and mixture samples drawn again from seed 1's models
    assert spread["seeds"] == [0, 1] and len(spread["conditional"]["accuracy"]["values"]) == 2
    assert spread["conditional"]["kid"]["values"][0] == q["conditional"]["kid"]["value"], "seed 0 is the main set"


def test_one_figure_regenerates_alone(smoke_run):
    target = smoke_run / "results/figures/fig3_psnr_gain.pdf"
    before = target.read_bytes()
    target.unlink()
    run(["snakemake", "results/figures/fig3_psnr_gain.pdf", "--cores", "2", *SMOKE], smoke_run)
    assert target.read_bytes() == before, "figures are byte-reproducible"
    assert planned_jobs(smoke_run, SMOKE) == {}


def test_report_has_every_figure_and_caption(smoke_run):
    run(["snakemake", *SMOKE, "--report", "results/report.html"], smoke_run)
    html = (smoke_run / "results/report.html").read_text(errors="replace")
    for word in ("fig2_denoising_grid", "fig5_density_distance", "separation ratio", "fig9_quality_nfe", "Algorithm C'",
                 "Provenance", "provenance.html", "results/provenance/figure_fig3_psnr_gain.json"):
        assert word in html


def test_every_figure_and_metrics_file_has_provenance(smoke_run):
    """Each output traces to its job's params subtree (hash), the code (commit, dirty flag, hash)
    and the checksums of the files it read, and those checksums are the files' real ones."""
    table = pd.read_csv(smoke_run / "results/metrics/provenance.csv")
    traced = set(table.file)
    wanted = {str(p.relative_to(smoke_run)) for d in ("figures", "metrics", "analysis", "models")
              for p in (smoke_run / "results" / d).rglob("*") if p.is_file() and not p.name.startswith("provenance.")}
    assert wanted <= traced
    for row in table.itertuples():
        assert files.sha256(smoke_run / row.file).startswith(row.sha256), row.file
    cfg = config.load([ROOT / "params.yaml", ROOT / "config/smoke.yaml"])
    rec = files.load_json(smoke_run / "results/provenance/train_conditional.json")
    assert rec["params_sha256"] == config.digest(config.select(cfg, stages.stage_keys("train", "conditional")))
    assert rec["params"]["train.conditional"] == dict(cfg["train"]["conditional"], steps=40, init="mixture")
    assert rec["params_files"] == ["params.yaml", "config/smoke.yaml"]
    assert set(rec["inputs"]) >= {"results/data/pip-textures/train.npz", "results/data/pip-textures/manifest.json",
                                  "results/models/mixture/model.pt"}  # the model it fine-tunes
    fig = files.load_json(smoke_run / "results/provenance/figure_fig5_density_distance.json")
    assert set(fig["outputs"]) == {"results/figures/fig5_density_distance.pdf", "results/figures/fig5_density_distance.png"}
    for path, sha in fig["inputs"].items():
        assert files.sha256(smoke_run / path) == sha
    assert len(rec["code_sha256"]) == 64 and set(rec["git"]) == {"commit", "dirty"}


def test_rerun_without_changes_does_nothing(smoke_run):
    assert planned_jobs(smoke_run, SMOKE) == {}


def test_a_param_change_reruns_only_the_stages_that_read_it(smoke_run, tmp_path):
    overlay = yaml.safe_load((smoke_run / "config/smoke.yaml").read_text())
    overlay["features"]["batch_size"] = 32
    (tmp_path / "o.yaml").write_text(yaml.safe_dump(overlay))
    # centroids (the replicate seed's too), and what reads the mixture/conditional features: separation,
    # density, their spread over seeds, summary, fig4, fig5, and fig3, which reads the per-seed curves
    # the summary writes
    assert planned_jobs(smoke_run, ["--configfile", str(tmp_path / "o.yaml")]) == {
        "centroids": 3, "centroids_replicate": 2, "separation": 1, "separation_replicate": 1, "density": 1,
        "density_replicate": 1, "feature_seeds": 1, "summary": 1, "figure": 3, "provenance": 1, "all": 1}
    overlay = yaml.safe_load((smoke_run / "config/smoke.yaml").read_text())
    overlay["train"]["single"]["steps"] = 21
    (tmp_path / "o.yaml").write_text(yaml.safe_dump(overlay))
    jobs = planned_jobs(smoke_run, ["--configfile", str(tmp_path / "o.yaml")])
    # train_single (both seeds), centroids_single, and the sweeps that use the single-class model (summary, fig3)
    assert jobs == {"train": 1, "train_replicate": 1, "centroids": 1, "sweep": 1, "sweep_replicate": 1, "summary": 1,
                    "figure": 1, "provenance": 1, "all": 1}
    overlay = yaml.safe_load((smoke_run / "config/smoke.yaml").read_text())
    overlay["analysis"]["fig2_sigmas"] = [1.0]
    (tmp_path / "o.yaml").write_text(yaml.safe_dump(overlay))
    assert planned_jobs(smoke_run, ["--configfile", str(tmp_path / "o.yaml")]) == {"figure": 1, "provenance": 1,
                                                                                    "all": 1}
    overlay = yaml.safe_load((smoke_run / "config/smoke.yaml").read_text())
    overlay["sampling"]["ddim_steps"] = [5]
    (tmp_path / "o.yaml").write_text(yaml.safe_dump(overlay))
    # only the quality-vs-NFE set, its evaluation, the joined table, the summary (its method comparison) and
    # the figures that show them: fig9, fig10 and fig3 (it reads the per-seed curves the summary writes)
    assert planned_jobs(smoke_run, ["--configfile", str(tmp_path / "o.yaml")]) == {
        "sample": 1, "evaluate": 1, "sample_metrics": 1, "summary": 1, "figure": 3, "provenance": 1, "all": 1}


@pytest.fixture
def smoke_copy(smoke_run, tmp_path):
    """A copy of the finished smoke run (mtimes kept) to edit the code of."""
    repo = tmp_path / "repo"
    shutil.copytree(smoke_run, repo, symlinks=True)
    return repo


def test_a_job_killed_after_snakemake_removed_its_outputs_runs_again(smoke_copy):
    """Snakemake deletes a job's outputs as it starts it, so a run killed then leaves them missing,
    and it re-makes a missing file only for a job that is needed. `rule all` asks for every job's
    record (and the provenance table reads them all), so the next run needs every job of the main
    job again: even a replicate seed's training whose sweep is still up to date (the kill test
    once lost one that way)."""
    records = list((smoke_copy / "results/provenance").rglob("*.json"))
    written = {path for rec in records for path in files.load_json(rec)["outputs"]}
    assert written <= set(pd.read_csv(smoke_copy / "results/metrics/provenance.csv").file), \
        "jobs whose record the provenance table does not ask for"
    record = smoke_copy / "results/provenance/replicates/train_single_seed1.json"
    for path in [record, *(smoke_copy / p for p in files.load_json(record)["outputs"])]:
        path.unlink()
    jobs = planned_jobs(smoke_copy, SMOKE)
    assert jobs.get("train_replicate") == 1 and jobs.get("sweep_replicate") == 1, jobs


def test_editing_the_training_loop_reruns_only_training_and_what_reads_models(smoke_copy):
    with open(smoke_copy / "src/fgsd/train.py", "a") as f:
        f.write("\n# an edit\n")
    jobs = planned_jobs(smoke_copy, SMOKE)
    readers = sum(row.model in stages.MODEL_KINDS for row in stages.SAMPLE_SETS.values())  # not D2C's sets
    assert jobs["train"] == 3 and jobs["sample"] == readers < len(stages.SAMPLE_SETS)
    assert not {"data", "classifier", "d2c_autoencoder", "d2c_prior"} & set(jobs), \
        "the data, the clean-image classifier and the D2C models do not run train.py"
    assert jobs["evaluate"] == readers, "the real-crop reference reads no model"


def test_adding_a_sample_set_or_a_figure_reruns_nothing_that_exists(smoke_copy):
    table = smoke_copy / "src/fgsd/stages.py"
    text = table.read_text()  # one new line in each table, as a user adds a set and a figure
    for head, line in (("SAMPLE_SETS = {", '    "mixture_again": SampleSet("set_mixture", 99, "mixture", ("per_class",)),'),
                       ("FIGURES = {", '    "fig99_dummy": Figure("figures", {"sweep": SWEEP}, caption="a new figure"),')):
        start = text.index(head)
        end = text.index("\n", start) + 1
        text = text[:end] + line + "\n" + text[end:]
    table.write_text(text)
    # the new jobs, and the two tables that gather every job's output (samples.csv, provenance.csv)
    assert planned_jobs(smoke_copy, SMOKE) == {"sample": 1, "evaluate": 1, "figure": 1, "sample_metrics": 1,
                                               "provenance": 1, "all": 1}
    # editing an existing set's row re-runs that set (its row is a param of its jobs), no other set
    table.write_text(table.read_text().replace('SampleSet("set_mixing", 3,', 'SampleSet("set_mixing", 33,'))
    jobs = planned_jobs(smoke_copy, SMOKE)
    assert jobs["sample"] == 2 and jobs["evaluate"] == 2


def test_the_main_job_computes_figs_4_5_numbers_on_every_training_seed(smoke_run):
    out = files.load_json(smoke_run / stages.FEATURE_SEEDS)
    assert out["seeds"] == [0, 1]
    own = [files.load_csv(smoke_run / p) for p in (stages.DENSITY, stages.REPLICATE_DENSITY.format(rseed=1))]
    assert not own[0].sym_kl.equals(own[1].sym_kl), "seed 1's density distance comes from seed 1's models"
    for job in ("centroids_mixture", "centroids_conditional", "separation", "density"):
        read = files.load_json(smoke_run / f"results/provenance/replicates/{job}_seed1.json")["inputs"]
        assert {p for p in read if "/data/" not in p} == {p for p in read if p.startswith("results/replicates/seed1/")}, job
    assert out["density.mse_gap.spearman"]["values"] == pytest.approx(
        [summary.correlations(d)["spearman"] for d in own])
    assert files.load_json(smoke_run / "results/metrics/summary.json")["feature_seeds"] == out
    assert planned_jobs(smoke_run, [*SMOKE, "--", "seeds"]) == {}, "`snakemake seeds` is part of the main job"


def test_config_overrides_on_the_command_line_are_refused(smoke_run):
    proc = run(["snakemake", "-n", "--config", "seed=3"], smoke_run, check=False)
    assert proc.returncode != 0 and "--configfile" in proc.stdout + proc.stderr


@pytest.mark.parametrize("text,key", [("data:\n  crop_sise: 32\n", "unknown parameter 'data.crop_sise'"),
                                      ("train:\n  lr: fast\n", "'train.lr' must be a number"),
                                      ("data:\n  crop_size: -16\n", "'data.crop_size' must be >= 8"),
                                      ("data:\n  dataset: imagenet\n", "'data.dataset' must be one of")])
def test_bad_params_stop_snakemake_with_one_line(tmp_path, text, key):
    repo = copy_repo(tmp_path)
    (repo / "bad.yaml").write_text(text)
    proc = run(["snakemake", "-n", "--configfile", "bad.yaml"], repo, check=False)
    errors = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()
              and not line.startswith("Config file params.yaml is extended")]
    assert proc.returncode != 0 and len(errors) == 1 and errors[0].startswith("error: bad.yaml: ")
    assert key in errors[0]


def test_paper_preset_plans_the_whole_dag(tmp_path):
    """The paper preset resolves (0 A.D. data, 80x80, GPU) and Snakemake plans every job; the data
    itself is not fetched here (about 1.4 GB; see the README)."""
    repo = copy_repo(tmp_path)
    jobs = planned_jobs(repo, ["--configfile", "config/paper.yaml"])
    assert jobs["data"] == 1 and jobs["train"] == 3 and jobs["sample"] == 12 and jobs["figure"] == 10


# What `dvc repro` runs below: every kind of stage (data, the three trainings, centroids, the sweep,
# the density and separation analyses, a sample set with its evaluation, the classifier, two
# figures), but not the baselines' trainings and samples, which run the same way one at a time
# and would double the test's time. test_dvc_yaml_matches_the_snakemake_dag checks every
# stage's command, and test_dvc_commit_after_snakemake_leaves_nothing_to_rerun the whole DAG's
# metrics and plots.
DVC_TARGETS = ("sweep", "separation", "figure_fig5_density_distance", "evaluate_nfe", "figure_fig6_samples")


def test_dvc_repro_runs_the_same_stages(tmp_path):
    repo = copy_repo(tmp_path)
    merged = config.load([ROOT / "params.yaml", ROOT / "config/smoke.yaml"])
    merged["train"]["replicate_seeds"] = []  # DVC runs stages one at a time: the seed-1 copies of the same
    (repo / "params.yaml").write_text(yaml.safe_dump(merged, sort_keys=False))  # commands would add ~1 min
    run([sys.executable, "-m", "fgsd.dvcgen"], repo)  # dvc.yaml's replicate stages follow the params' seeds
    run(["git", "init", "-q"], repo)
    out = run(["dvc", "repro", *DVC_TARGETS], repo).stdout
    for stage in ("data", "train_mixture", "train_conditional", "train_single", "centroids_conditional", "sweep",
                  "density", "separation", "figure_fig5_density_distance", "sample_nfe", "classifier",
                  "evaluate_nfe", "sample_conditional", "evaluate_conditional", "figure_fig6_samples"):
        assert f"Running stage '{stage}'" in out
    assert "Running stage 'guide'" not in out, "only the targets' ancestors run"
    assert (repo / "results/models/conditional/model.pt").is_file()
    again = run(["dvc", "repro", *DVC_TARGETS], repo).stdout
    assert "Running stage" not in again
    metrics = run(["dvc", "metrics", "show", "--json"], repo).stdout
    assert "test_psnr" in metrics and "test_accuracy" in metrics
    plots = run(["dvc", "plots", "show", "--json"], repo).stdout
    assert "train_log.csv" in plots

    # an experiment on a training parameter re-runs that model and what reads it up to the sweep,
    # which reads all three models, and not the other two (the stages below the sweep re-run as
    # in Snakemake's param-change test above; targeting the sweep saves half a minute)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "baseline"], repo)
    exp = run(["dvc", "exp", "run", "-S", "train.single.steps=25", "-n", "single25", "sweep"], repo).stdout
    assert "Running stage 'train_single'" in exp and "Running stage 'sweep'" in exp
    assert "Running stage 'train_mixture'" not in exp and "Running stage 'train_conditional'" not in exp
    shown = json.loads(run(["dvc", "exp", "show", "--json"], repo).stdout)
    assert "single25" in json.dumps(shown) and '"steps": 25' in json.dumps(shown)
    diff = run(["dvc", "metrics", "diff", "--md"], repo).stdout  # workspace (the experiment) vs HEAD
    assert "results/models/single/metrics.json" in diff

    # researchers write 1e-4 (YAML 1.1 would read a string); one target keeps it to one training job
    exp = run(["dvc", "exp", "run", "-S", "train.lr=1e-4", "train_single"], repo).stdout
    assert "Running stage 'train_single'" in exp
    trained = json.loads((repo / "results/models/single/config.json").read_text())["params"]
    assert trained["train.lr"] == 1e-4


def test_dvc_push_and_pull_round_trip_is_byte_identical(smoke_run, tmp_path):
    """Record a Snakemake run in DVC, push it to the default remote, lose the cache and every
    output, pull: every file comes back byte-identical, and after `--touch` Snakemake is idle."""
    repo = tmp_path / "repo"
    shutil.copytree(smoke_run, repo, symlinks=True)
    run(["git", "init", "-q"], repo)
    run([sys.executable, "-m", "fgsd.dvcgen", *SMOKE], repo)  # the smoke preset's replicate stages
    run(["dvc", "commit", "-f", "-q"], repo)
    assert "pushed" in run(["dvc", "push"], repo).stdout
    assert (repo / "dvc-remote").is_dir(), "the default remote is dvc-remote/ in the checkout"
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    tracked = sorted({o["path"] for s in lock["stages"].values() for o in s.get("outs", [])})
    assert {"results/models/conditional/model.pt", "results/data/pip-textures/train.npz",
            "results/figures/fig6_samples.png"} <= set(tracked)
    before = {p: files.sha256(repo / p) for p in tracked}
    shutil.rmtree(repo / ".dvc" / "cache")
    for p in tracked:
        (repo / p).unlink()
    run(["dvc", "pull"], repo)
    assert {p: files.sha256(repo / p) for p in tracked} == before
    assert "in sync" in run(["dvc", "status", "-c"], repo).stdout
    run(["snakemake", "--touch", "--cores", "1", *SMOKE], repo)
    assert planned_jobs(repo, SMOKE) == {}


def test_dvc_commit_after_snakemake_leaves_nothing_to_rerun(smoke_run, tmp_path):
    """DVC links outputs from its cache as hard links, so committing a Snakemake run keeps their
    mtimes (a copy would make Snakemake re-run the whole DAG)."""
    outputs = [p for p in (smoke_run / "results").rglob("*") if p.is_file() and ".state" not in p.parts]
    before = {p: p.stat().st_mtime_ns for p in outputs}
    run(["git", "init", "-q"], smoke_run)
    run([sys.executable, "-m", "fgsd.dvcgen", *SMOKE], smoke_run)  # the smoke preset's replicate stages
    run(["dvc", "commit", "-f", "-q"], smoke_run)
    assert {p: p.stat().st_mtime_ns for p in outputs} == before
    assert planned_jobs(smoke_run, SMOKE) == {}
    # what DVC reads from the recorded run: the whole DAG's metrics and plots
    metrics = run(["dvc", "metrics", "show", "--json"], smoke_run).stdout
    assert "test_psnr" in metrics and "separation_median_ratio" in metrics and "test_accuracy" in metrics
    plots = run(["dvc", "plots", "show", "--json"], smoke_run).stdout
    assert "train_log.csv" in plots and "psnr_gain.csv" in plots
    run(["dvc", "plots", "show", "-o", str(tmp_path / "dvc_plots"), "-q"], smoke_run)  # not into the shared run
    assert "psnr_mean" in (tmp_path / "dvc_plots/index.html").read_text()


def _jobs_running(pid: int, stage: str) -> list[tuple[float, str]]:
    """(seconds running, log file) of each `python -m fgsd <stage>` job under process `pid`."""
    import time

    import psutil
    found = []
    try:
        procs = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return found
    for p in procs:
        try:
            cmd = p.cmdline()
            if cmd[1:4] == ["-m", "fgsd", stage]:
                found.append((time.time() - p.create_time(), cmd[cmd.index("--log") + 1] if "--log" in cmd else ""))
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return found


# Where the run is killed, each time followed by a restart as a user would do it: a training once it
# has saved resumable state; a sampling job once it has loaded its model (its log says where the
# samplers stop); an evaluation and a figure job 2 s after they started (past the imports).
KILLS = {"train": (0.5, None), "sample": (0.0, "samplers stop at"), "evaluate": (2.0, None), "figure": (2.0, None)}


def _state_saved(repo: Path) -> bool:
    return any(".state" in p.parts for p in (repo / "results").rglob("*.pt"))


def _ready_to_kill(repo: Path, pid: int, stage: str) -> bool:
    after, marker = KILLS[stage]
    for age, log in _jobs_running(pid, stage):
        text = (repo / log).read_text() if marker and log and (repo / log).is_file() else ""
        if age >= after and (marker is None or marker in text) and (stage != "train" or _state_saved(repo)):
            return True
    return False


def _csv_differences(want: dict, got: dict) -> str:
    """The differing lines of each differing CSV (old, then new), so that a failure says whether
    work was lost (rows missing) or a number moved, and by how much."""
    out = []
    for path in sorted(k for k in want if want[k] != got.get(k) and k.suffix == ".csv"):
        old, new = want[path].decode().splitlines(), got[path].decode().splitlines()
        pairs = [(a, b) for a, b in zip(old, new) if a != b][:6]
        out += [f"{path} ({len(old)} -> {len(new)} lines):"] + [f"  - {a}\n  + {b}" for a, b in pairs]
    return "\n".join(out)


def test_kill_anywhere_lose_nothing(smoke_run, tmp_path):
    """On a copy of the finished smoke run with a replicate model and a sample set removed (so a
    training, a sampling, an evaluation and figures must run again), SIGKILL the whole run in the
    middle of a job of each kind, whichever comes first; after `snakemake --unlock` and a rerun
    with --rerun-incomplete each time, every output is byte-identical to the uninterrupted run
    and no temp file or resumable state is left."""
    import signal
    import time
    repo = tmp_path / "repo"
    shutil.copytree(smoke_run, repo, symlinks=True)  # mtimes kept: only what is removed, and what follows, runs
    # a regenerated sample set identical to the old one does not re-run its evaluation (Snakemake
    # compares checksums of small files), so the evaluation's output is removed too
    removed = ["results/replicates/seed1/models/mixture/model.pt", "results/samples/nfe.npz",
               "results/metrics/sets/nfe.csv"]
    for path in removed:
        (repo / path).unlink()
    # named as targets, or Snakemake would not remake them (what reads them is up to date)
    cmd = ["snakemake", "all", *removed, "--cores", "2", "--rerun-incomplete", *SMOKE]
    env = dict(ENV, PYTHONPATH=str(repo / "src"))
    left = list(KILLS)
    while left:
        proc = subprocess.Popen(cmd, cwd=repo, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        deadline = time.time() + 300
        killed = None
        while killed is None:
            killed = next((stage for stage in left if _ready_to_kill(repo, proc.pid, stage)), None)
            assert killed or proc.poll() is None, f"the run ended before a job of each of {left} could be killed"
            assert time.time() < deadline
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        left.remove(killed)
        run(["snakemake", "--unlock", *SMOKE], repo)
    run(cmd, repo)

    # timings and log lines differ by nature; the report is `snakemake --report`'s (another test made it)
    skip = {"logs", "benchmarks", "report.html"}
    outputs = lambda root: {p.relative_to(root): p.read_bytes() for p in (root / "results").rglob("*")
                            if p.is_file() and not skip & set(p.relative_to(root).parts)}
    want, got = outputs(smoke_run), outputs(repo)
    assert sorted(map(str, got.keys() - want.keys())) == [], "files the uninterrupted run does not have"
    assert sorted(map(str, want.keys() - got.keys())) == [], "outputs missing after the restarts"
    differ = sorted(str(k) for k in want if want[k] != got[k])
    assert differ == [], f"outputs that differ from the uninterrupted run:\n{_csv_differences(want, got)}"
    assert "resuming" in (repo / "results/logs/replicates/train_mixture_seed1.log").read_text(), \
        "the killed training did not resume from its saved state"
