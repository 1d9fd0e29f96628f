"""Training: the optimiser and train state, the update and evaluation steps,
the device mesh, the loop, fine-tuning's starting point, and the learning-rate
range test. docs/architecture.md lists the modules."""
