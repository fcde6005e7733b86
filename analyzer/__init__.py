"""Loading a workload, capturing traces, parsing them, conv-layer attribution and the A/B harness."""
