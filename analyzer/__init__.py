"""The stages before rules and after them: trace (reading) → conv (analysis); capture feeds the trace;
candidates (the fixes' transforms) and measure (the A/B harness and the plan)."""
