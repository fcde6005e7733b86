"""Whole-step views of a trace, beside the conv analysis: where a step's time, operators, kernels, modules and memory
go, and HTA-class analyses (idle time, launches, queues, synchronizations). No torch."""
