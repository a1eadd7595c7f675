"""conceptspace: how diffusion models learn concepts (Park et al., NeurIPS 2024).

Each module does one stage of the study; the Snakemake rules call them through
``python -m conceptspace <command>`` and pass data only through files.
"""

__version__ = "0.1.0"
