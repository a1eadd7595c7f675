# A test-only workflow for tests/test_slurm.py, run with the real Slurm profile
# (workflow/profiles/slurm): one job that fails on its first attempt and succeeds on the
# next, so that the profile's retries and its runtime that grows with each attempt are
# seen on a real Slurm. The marker file is what makes the first attempt fail.


rule flaky:
    output:
        "flaky.txt",
    log:
        "flaky.log",
    resources:
        attempt=lambda wildcards, attempt: attempt,
    shell:
        "if [ ! -e failed-once ]; then touch failed-once;"
        " echo 'failing on purpose, attempt {resources.attempt}' > {log}; exit 3; fi;"
        " echo attempt={resources.attempt} runtime={resources.runtime} > {output}"
