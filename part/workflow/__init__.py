"""The workflow around the engine: the plan and progress of a grid, job logs, the results' README,
the source fingerprint and the Snakemake lock wrapper."""
