"""The simulated world and the replay: drivers and riders, fleets, counter-based randomness,
synthetic cities, the replay loop with its checkpoints, and policy comparison."""
