"""The pure matching core: geo, state machines, the columnar driver table, candidates, ETA cost,
assignment (batch and greedy) and one shard's tick. Plain Python/numpy: no Ray, no files."""
