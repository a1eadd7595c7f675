# conceptspace: how diffusion models learn concepts (Park et al., NeurIPS 2024).
#
#   snakemake --cores 4                                   the study in config.yaml
#   snakemake --cores 2 --configfile workflow/presets/smoke.yaml   a run of every rule in minutes
#   snakemake results/figures/fig_signal.pdf              one figure and what it needs
#   snakemake --executor slurm -j 64                      on a Slurm cluster
#   snakemake --report results/report.html                the report, once the study has run


from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


# snakemake --report results/report.html: the study, then every figure with its caption.
report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/gather.smk"
include: "workflow/rules/figures.smk"
include: "workflow/rules/claims.smk"


rule all:
    default_target: True
    input:
        STUDY_DATASETS,
        FIGURES,
        # the claims are judged from the signal study (claim 5 adds underspecification)
        CLAIMS_JSON if SIGNAL_STUDY else [],
