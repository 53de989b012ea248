FIGURE_INPUTS = {
    "fig2_denoising_grid": ["results/models/conditional/model.pt", "results/models/mixture/model.pt"],
    "fig3_psnr_gain": ["results/analysis/sweep.csv"],
    "fig4_separation": ["results/analysis/separation.csv", "results/features/mixture/phi.npz",
                        "results/features/conditional/phi.npz"],
    "fig5_density_distance": ["results/analysis/density.csv"],
    **{name: ["results/metrics/samples.csv", *sets]
       for name, sets in {
           "fig6_samples": ["results/samples/conditional.npz", "results/samples/mixture.npz"],
           "fig7_interpolation": ["results/samples/interpolation.npz", "results/samples/mixing.npz"],
           "fig8_fewshot": ["results/samples/fewshot.npz"],
           "fig9_quality_nfe": [],
       }.items()},
}
FIGURES = list(FIGURE_INPUTS)


rule figure:
    input:
        DATA_FILES,
        lambda wildcards: FIGURE_INPUTS[wildcards.name],
        code("network", "data", "train", "kl", "analysis", "figures", "sample_figures"),
    output:
        pdf="results/figures/{name}.pdf",
        png=report("results/figures/{name}.png", caption="../report/figure.rst", category="Figures"),
        prov="results/provenance/figure_{name}.json",
    params:
        tracked=tracked("figure"),
        data=DATA,
    log:
        "results/logs/figure_{name}.log",
    benchmark:
        "results/benchmarks/figure_{name}.tsv"
    wildcard_constraints:
        name="|".join(FIGURES),
    shell:
        "python -m fgsd figure {wildcards.name} --data {params.data} --out {output.pdf} --log {log}"
        " --provenance {output.prov}"
