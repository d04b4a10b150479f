"""Benchmarks: ddbnb against the baselines, as ratios measured in one run."""
