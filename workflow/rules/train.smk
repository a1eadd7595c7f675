# Training: the VDM of each run, and the concept classifier (probe) of the study.
# Checkpoints live in an undeclared folder of the run: Snakemake deletes the declared
# outputs of a failed job, and a killed training must resume from its checkpoints.
# The manifest, written last, is the declared output.


rule train_vdm:
    input:
        RESULTS / "{study}" / "data" / "{run}.npz",
    output:
        RESULTS / "{study}" / "runs" / "{run}" / "manifest.json",
    log:
        LOGS / "train_vdm" / "{study}" / "{run}.log",
    benchmark:
        LOGS / "train_vdm" / "{study}" / "{run}.benchmark.tsv"
    group:
        "train"  # several runs share one GPU (group-components: profiles/default)
    conda:
        ENV
    threads: threads_for("train")
    resources:
        gres=GPU,
        runtime=training_minutes,
        mem_mb=per_attempt(8000),
    params:
        settings=lambda wildcards: settings(
            "model", training=STUDIES[wildcards.study].training(config)
        ),
        # a change to a param's value or to the shell command retrains every run
        fields=lambda wildcards: run_of(wildcards).fields,
        run_dir=lambda wildcards: RESULTS / wildcards.study / "runs" / wildcards.run,
        device=config["compute"]["device"],
        compile="--compile" if config["compute"]["compile"] else "",
    shell:
        "python -m conceptspace train --settings {params.settings:q} --data {input:q}"
        " --seed {params.fields[seed]} --run-dir {params.run_dir:q} --manifest {output:q}"
        " --device {params.device} --threads {threads} {params.compile} >> {log:q} 2>&1"


rule train_probe:
    input:
        # CelebA's probe trains on its prepared set; the synthetic studies render theirs
        lambda wildcards: (
            []
            if STUDIES[wildcards.study].renders
            else [RESULTS / wildcards.study / "probe" / "probe_set.npz"]
        ),
    output:
        probe=RESULTS / "{study}" / "probe" / "probe.pt",
        metrics=RESULTS / "{study}" / "probe" / "metrics.json",
    log:
        LOGS / "train_probe" / "{study}.log",
    benchmark:
        LOGS / "train_probe" / "{study}.benchmark.tsv"
    conda:
        ENV
    threads: threads_for("probe")
    resources:
        gres=GPU,
        runtime=per_attempt(120),
        mem_mb=per_attempt(16000),
    params:
        settings=lambda wildcards: settings(
            "data", "probe", signals=study_on(wildcards.study).levels(config)
        ),
        layout=study_layout,
        data=lambda wildcards, input: f"--data {shlex.quote(input[0])}" if input else "",
        seed=lambda wildcards: study_on(wildcards.study).first_seed(config),
        device=config["compute"]["device"],
    shell:
        "python -m conceptspace probe --settings {params.settings:q} --seed {params.seed}"
        " --layout {params.layout} {params.data}"
        " --out {output.probe:q} --metrics {output.metrics:q}"
        " --device {params.device} --threads {threads} > {log:q} 2>&1"
