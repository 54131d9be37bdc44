"""Training: train state and optimiser, losses, the data-parallel step, the loop, checkpoints, mesh."""
