# Gathering: each run's checkpoints into a trajectory, then all runs into the study
# dataset (seed x color gap x size gap x step x prompt x concept) with learning times.


rule gather_run:
    input:
        expand(SIGNAL / "runs" / "{{run}}" / "eval" / "step_{step:06d}.nc", step=STEPS),
    output:
        SIGNAL / "runs" / "{run}" / "trajectory.nc",
    log:
        LOGS / "gather_run" / "{run}.log",
    conda:
        ENV
    threads: threads_for("gather")
    shell:
        "python -m conceptspace gather-run --out {output:q} {input:q} > {log:q} 2>&1"


rule gather_study:
    input:
        expand(SIGNAL / "runs" / "{run}" / "trajectory.nc", run=RUN_IDS),
    output:
        STUDY_DATASET,
    log:
        LOGS / "gather_study" / "signal.log",
    conda:
        ENV
    threads: threads_for("gather")
    params:
        settings=json.dumps(config, sort_keys=True),
    shell:
        "python -m conceptspace gather-study --settings {params.settings:q}"
        " --out {output:q} {input:q} > {log:q} 2>&1"
