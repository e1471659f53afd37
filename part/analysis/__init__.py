"""What is read out of evaluated runs: statistics, tables (main, paper comparison, checkpoints, curves,
experiments), figures, the CAM gallery and the TensorBoard export."""
