"""Training: the methods' losses, CAMs, importance masks and ε-maps, batch norm, multi-process
training, the optimiser and the resumable training loop."""
