"""What every stage shares, beneath them: the example and shard contract, the spec base and resources, devices
and precision, the one Ray start-up, progress lines and file locks. It imports no stage package; `augment`,
`distill` and `jobs` build on it, and `jobs` alone composes them."""
