# Gathering: all runs' trajectories (evaluate.smk writes each) into the study dataset
# of each study (its grid, e.g. seed x color gap x size gap, x step x method x
# prompt x concept) with learning times.

# What a study dataset records as its config: what made its numbers (gathering itself reads
# evaluation's learning-time keys), and figures.signal, which the claims read from it.
DATASET_KEYS = ("preset", "data", "model", "training", "probe", "evaluation", "figures.signal")


rule gather_study:
    input:
        lambda wildcards: expand(
            RESULTS / wildcards.study / "runs" / "{run}" / "trajectory.nc",
            run=study_runs(wildcards.study),
        ),
    output:
        RESULTS / "{study}" / "study.nc",
    log:
        LOGS / "gather_study" / "{study}.log",
    localrule: True
    conda:
        ENV
    threads: threads_for("gather")
    params:
        settings=lambda wildcards: settings(*DATASET_KEYS, f"studies.{wildcards.study}"),
        grid=lambda wildcards: " ".join(STUDIES[wildcards.study].grid),
    shell:
        "python -m conceptspace gather-study --settings {params.settings:q} --grid {params.grid}"
        " --out {output:q} {input:q} > {log:q} 2>&1"
