"""The base every stage may use: the run and workflow configs and their vocabulary, run directories,
atomic and torch files, locks, provenance, errors and where a model runs (device, GPUs)."""
