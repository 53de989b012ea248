rule sweep:
    input:
        DATA_FILES,
        **{kind: stages.MODEL.format(kind=kind) for kind in KINDS},
        code=code("sweep"),
    output:
        table=stages.SWEEP,
        references_json="results/analysis/references.json",
        prov="results/provenance/sweep.json",
    params:
        tracked=tracked("sweep"),
        spec=spec("sweep"),
        args=args(data=DATA),
    log:
        "results/logs/sweep.log",
    benchmark:
        "results/benchmarks/sweep.tsv"
    threads: JOB_THREADS
    resources:
        gpu=GPU,
    shell:
        "python -m fgsd sweep {params.args} --log {log} --provenance {output.prov}"


use rule sweep as sweep_replicate with:  # the same sweep (same test noise) on another training seed's models
    input:
        DATA_FILES,
        **{kind: stages.REPLICATE_MODEL.replace("{kind}", kind) for kind in KINDS},
        code=code("sweep"),
    output:  # no references.json: G-infinity does not depend on the training seed
        table=stages.REPLICATE_SWEEP,
        prov="results/provenance/replicates/sweep_seed{rseed}.json",
    log:
        "results/logs/replicates/sweep_seed{rseed}.log",
    benchmark:
        "results/benchmarks/replicates/sweep_seed{rseed}.tsv"


rule separation:
    input:
        phi_mixture=stages.PHI.format(kind="mixture"),
        phi_conditional=stages.PHI.format(kind="conditional"),
        code=code("separation"),
    output:
        table=stages.SEPARATION,
        prov="results/provenance/separation.json",
    params:
        tracked=tracked("separation"),
        spec=spec("separation"),
        args=args(),
    log:
        "results/logs/separation.log",
    benchmark:
        "results/benchmarks/separation.tsv"
    shell:
        "python -m fgsd separation {params.args} --log {log} --provenance {output.prov}"


use rule separation as separation_replicate with:  # another training seed's features (`snakemake seeds`)
    input:
        phi_mixture=stages.REPLICATE_PHI.replace("{kind}", "mixture"),
        phi_conditional=stages.REPLICATE_PHI.replace("{kind}", "conditional"),
        code=code("separation"),
    output:
        table=stages.REPLICATE_SEPARATION,
        prov="results/provenance/replicates/separation_seed{rseed}.json",
    log:
        "results/logs/replicates/separation_seed{rseed}.log",
    benchmark:
        "results/benchmarks/replicates/separation_seed{rseed}.tsv"


rule density:
    input:
        DATA_FILES,
        model=stages.MODEL.format(kind="conditional"),
        phi=stages.PHI.format(kind="conditional"),
        phi_mixture=stages.PHI.format(kind="mixture"),
        code=code("density"),
    output:
        table=stages.DENSITY,
        prov="results/provenance/density.json",
    params:
        tracked=tracked("density"),
        spec=spec("density"),
        args=args(data=DATA),
    log:
        "results/logs/density.log",
    benchmark:
        "results/benchmarks/density.tsv"
    threads: JOB_THREADS
    resources:
        gpu=GPU,
    shell:
        "python -m fgsd density {params.args} --log {log} --provenance {output.prov}"


use rule density as density_replicate with:  # the same test noise, another training seed's models
    input:
        DATA_FILES,
        model=stages.REPLICATE_MODEL.replace("{kind}", "conditional"),
        phi=stages.REPLICATE_PHI.replace("{kind}", "conditional"),
        phi_mixture=stages.REPLICATE_PHI.replace("{kind}", "mixture"),
        code=code("density"),
    output:
        table=stages.REPLICATE_DENSITY,
        prov="results/provenance/replicates/density_seed{rseed}.json",
    log:
        "results/logs/replicates/density_seed{rseed}.log",
    benchmark:
        "results/benchmarks/replicates/density_seed{rseed}.tsv"


rule summary:
    input:
        sweep=stages.SWEEP,
        separation=stages.SEPARATION,
        density=stages.DENSITY,
        references_json="results/analysis/references.json",
        set_metrics=list(stages.set_metrics(*stages.HEADLINE_GROUPS).values()),
        classifier_metrics="results/models/classifier/metrics.json",
        guide_metrics="results/models/guide/metrics.json",
        d2c_metrics="results/models/d2c_autoencoder/metrics.json",
        replicate_sweeps=expand(stages.REPLICATE_SWEEP, rseed=config["train"]["replicate_seeds"]),
        replicate_set_metrics=expand(stages.REPLICATE_SET_METRICS, rseed=config["train"]["replicate_seeds"],
                                     group=stages.REPLICATED_SETS),  # seed by seed
        feature_seeds_json=stages.FEATURE_SEEDS,
        code=code("summary"),
    output:
        summary_json="results/metrics/summary.json",
        gain="results/analysis/psnr_gain.csv",
        gain_by_seed=stages.GAIN_BY_SEED,
        prov="results/provenance/summary.json",
    params:
        tracked=tracked("summary"),
        spec=spec("summary"),
        args=args(),
    log:
        "results/logs/summary.log",
    benchmark:
        "results/benchmarks/summary.tsv"
    shell:
        "python -m fgsd summary {params.args} --log {log} --provenance {output.prov}"


# Figs 4-5's numbers (separation, density distance) on every training seed's models; the summary
# quotes them, so they are in the main job. `snakemake --cores all seeds` makes them alone.
rule seeds:
    input:
        stages.FEATURE_SEEDS,


rule feature_seeds:
    input:
        separation=stages.SEPARATION,
        density=stages.DENSITY,
        replicate_separations=expand(stages.REPLICATE_SEPARATION, rseed=config["train"]["replicate_seeds"]),
        replicate_densities=expand(stages.REPLICATE_DENSITY, rseed=config["train"]["replicate_seeds"]),
        code=code("feature_seeds"),
    output:
        table=stages.FEATURE_SEEDS_TABLE,
        spread_json=stages.FEATURE_SEEDS,
        prov="results/provenance/feature_seeds.json",
    params:
        tracked=tracked("feature_seeds"),
        spec=spec("feature_seeds"),
        args=args(),
    log:
        "results/logs/feature_seeds.log",
    benchmark:
        "results/benchmarks/feature_seeds.tsv"
    shell:
        "python -m fgsd feature_seeds {params.args} --log {log} --provenance {output.prov}"
