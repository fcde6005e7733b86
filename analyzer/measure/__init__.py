"""Stage 4, measuring: the A/B harness, trials of candidates, environment trials, probes, the plan, result types."""
