# The study (`snakemake --cores all study`), not part of the main job: per setting (number of classes,
# crop scale) its own data, a mixture and a conditional model per training seed, a PSNR table beside
# the reference denoisers; then one table and one figure (src/fgsd/study.py).
STUDY_SETTINGS = stages.study_settings(config["study"])
STUDY_SEEDS = config["study"]["seeds"]
STUDY_DATA_FILES = [f"{stages.STUDY_DATA}/{name}" for name in stages.DATA_FILES]
STUDY_PSNR_TABLES = expand(stages.STUDY_PSNR, setting=STUDY_SETTINGS, sseed=STUDY_SEEDS)


def study_data_dir(wildcards):
    return stages.STUDY_DATA.format(setting=wildcards.setting)


wildcard_constraints:
    setting=stages.SETTING_PATTERN,
    sseed=r"\d+",


rule study:
    input:
        stages.STUDY_GAIN,
        stages.STUDY_FIGURE,


rule study_data:
    input:
        code=code("study_data"),
    output:
        STUDY_DATA_FILES,
        prov=stages.STUDY + "/provenance/data.json",
    params:
        tracked=tracked("study_data"),
        spec=spec("study_data"),
        args=args(setting=lambda w: w.setting, out=study_data_dir),
    log:
        stages.STUDY + "/logs/data.log",
    shell:
        "python -m fgsd study_data {params.args} --log {log} --provenance {output.prov}"


rule study_train:
    input:
        STUDY_DATA_FILES,
        code=code("study_train"),
    output:
        model=stages.STUDY_MODEL,
        train_log=stages.STUDY_RUN + "/models/{kind}/train_log.csv",
        config_json=stages.STUDY_RUN + "/models/{kind}/config.json",
        metrics=stages.STUDY_RUN + "/models/{kind}/metrics.json",
        prov=stages.STUDY_RUN + "/provenance/train_{kind}.json",
    params:
        tracked=tracked("study_train"),
        spec=spec("study_train"),
        args=args(data=study_data_dir,
                  state=lambda w: stages.STUDY_RUN.format(setting=w.setting, sseed=w.sseed) + "/.state"),
    log:
        stages.STUDY_RUN + "/logs/train_{kind}.log",
    benchmark:
        stages.STUDY_RUN + "/benchmarks/train_{kind}.tsv"
    threads: JOB_THREADS
    resources:
        gpu=GPU,
        mem_mb=4000,
        runtime=120,
    shell:
        "python -m fgsd study_train {wildcards.kind} {params.args} --seed {wildcards.sseed} --log {log} --provenance {output.prov}"


rule study_eval:
    input:
        STUDY_DATA_FILES,
        **{kind: stages.STUDY_MODEL.replace("{kind}", kind) for kind in stages.STUDY_KINDS},
        code=code("study_eval"),
    output:
        table=stages.STUDY_PSNR,
        prov=stages.STUDY_RUN + "/provenance/eval.json",
    params:
        tracked=tracked("study_eval"),
        spec=spec("study_eval"),
        args=args(data=study_data_dir),
    log:
        stages.STUDY_RUN + "/logs/eval.log",
    threads: JOB_THREADS
    resources:
        gpu=GPU,
    shell:
        "python -m fgsd study_eval {params.args} --log {log} --provenance {output.prov}"


rule study_report:
    input:
        tables=STUDY_PSNR_TABLES,
        code=code("study_report"),
    output:
        gain=stages.STUDY_GAIN,
        pdf=stages.STUDY_FIGURE,
        png=stages.STUDY_FIGURE.replace(".pdf", ".png"),
        prov="results/study/provenance/report.json",
    params:
        tracked=tracked("study_report"),
        spec=spec("study_report"),
        args=args(),
    log:
        "results/study/logs/report.log",
    shell:
        "python -m fgsd study_report {params.args} --log {log} --provenance {output.prov}"
