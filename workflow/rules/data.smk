# Synthetic training images: one dataset per run of a study (its seed fixes the images;
# the study its concept layout). CelebA's sets are prepared from the user's folder.
from conceptspace.studies import celeba_options, mask_encoding


rule render_training_set:
    output:
        RESULTS / "{study}" / "data" / "{run}.npz",
    log:
        LOGS / "render_training_set" / "{study}" / "{run}.log",
    wildcard_constraints:
        study="|".join(name for name, study in STUDIES.items() if study.renders),
    localrule: True
    conda:
        ENV
    threads: threads_for("render")
    params:
        settings=lambda wildcards: settings("data", **mask_encoding(config, wildcards.study)),
        run=run_args,
        layout=study_layout,
    shell:
        "python -m conceptspace render --settings {params.settings:q} {params.run}"
        " --layout {params.layout} --out {output:q} > {log:q} 2>&1"


# CelebA (studies.celeba): balanced sets read by torchvision's loader from the user's
# folder; a run's training set (its seed draws the images, the held-out class left out)
# and the probe's set (every class).
if "celeba" in ON:
    CELEBA = ON["celeba"].section(config)

    rule prepare_celeba:
        output:
            RESULTS / "celeba" / "data" / "{run}.npz",
        log:
            LOGS / "prepare_celeba" / "{run}.log",
        conda:
            ENV
        threads: threads_for("render")
        resources:
            runtime=per_attempt(60),
            mem_mb=per_attempt(8000),
        params:
            options=celeba_options(config, CELEBA["per_class"]),
            seed=lambda wildcards: run_of(wildcards, "celeba").seed,
        shell:
            "python -m conceptspace celeba {params.options} --seed {params.seed}"
            " --out {output:q} > {log:q} 2>&1"

    rule prepare_celeba_probe_set:
        output:
            RESULTS / "celeba" / "probe" / "probe_set.npz",
        log:
            LOGS / "prepare_celeba" / "probe_set.log",
        conda:
            ENV
        threads: threads_for("render")
        resources:
            runtime=per_attempt(60),
            mem_mb=per_attempt(8000),
        params:
            options=celeba_options(config, CELEBA["probe_per_class"]),
            seed=ON["celeba"].first_seed(config),
        shell:
            "python -m conceptspace celeba {params.options} --seed {params.seed}"
            " --include-held-out --out {output:q} > {log:q} 2>&1"
