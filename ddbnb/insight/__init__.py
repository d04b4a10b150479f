"""Insight: what a transform would do and what a run did (sampling, diffs, estimates, results, charts)."""
