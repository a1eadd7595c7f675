# Gathering: all runs' trajectories (evaluate.smk writes each) into the study dataset
# of each study (its grid, e.g. seed x color gap x size gap, x step x method x
# prompt x concept) with learning times.


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
    localrule: True
    conda:
        ENV
    threads: threads_for("gather")
    params:
        settings=json.dumps(config, sort_keys=True),
        grid=lambda wildcards: STUDY_GRID[wildcards.study],
    shell:
        "python -m conceptspace gather-study --settings {params.settings:q} --grid {params.grid}"
        " --out {output:q} {input:q} > {log:q} 2>&1"
