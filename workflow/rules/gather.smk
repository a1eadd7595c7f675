# Gathering: each run's checkpoints into a trajectory, then all runs into the study
# dataset of each study (its grid, e.g. seed x color gap x size gap, x step x method x
# prompt x concept) with learning times.


rule gather_run:
    input:
        lambda wildcards: expand(
            RESULTS / wildcards.study / "runs" / wildcards.run / "eval" / "step_{step:06d}.nc",
            step=STUDY_STEPS[wildcards.study],
        ),
    output:
        RESULTS / "{study}" / "runs" / "{run}" / "trajectory.nc",
    log:
        LOGS / "gather_run" / "{study}" / "{run}.log",
    conda:
        ENV
    threads: threads_for("gather")
    shell:
        "python -m conceptspace gather-run --out {output:q} {input:q} > {log:q} 2>&1"


rule gather_study:
    input:
        lambda wildcards: expand(
            RESULTS / wildcards.study / "runs" / "{run}" / "trajectory.nc",
            run=study_run_ids(wildcards.study),
        ),
    output:
        RESULTS / "{study}" / "study.nc",
    log:
        LOGS / "gather_study" / "{study}.log",
    conda:
        ENV
    threads: threads_for("gather")
    params:
        settings=json.dumps(config, sort_keys=True),
        grid=lambda wildcards: STUDY_GRID[wildcards.study],
    shell:
        "python -m conceptspace gather-study --settings {params.settings:q} --grid {params.grid}"
        " --out {output:q} {input:q} > {log:q} 2>&1"
