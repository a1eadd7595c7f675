# A test-only workflow for tests/test_slurm.py, run through Slurm with the site profile
# (profiles/slurm-site) and --retries 1: one job that fails on its first attempt and
# succeeds on the next, so that a retry and a runtime that grows with each attempt, as
# the pipeline's rules declare them, are seen on a real Slurm. The marker file is what
# makes the first attempt fail. (No `retries:` directive: the Snakemake inside the Slurm
# job would obey it and retry there, in the same Slurm job.)


rule flaky:
    output:
        "flaky.txt",
    log:
        "flaky.log",
    resources:
        attempt=lambda wildcards, attempt: attempt,
        runtime=lambda wildcards, attempt: 10 * attempt,
        mem_mb=lambda wildcards, attempt: 1000 * attempt,
    shell:
        "if [ ! -e failed-once ]; then touch failed-once;"
        " echo 'failing on purpose, attempt {resources.attempt}' > {log}; exit 3; fi;"
        " echo attempt={resources.attempt} runtime={resources.runtime} > {output}"
