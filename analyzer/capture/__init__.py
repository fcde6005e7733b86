"""Capture: load the model file, run it under torch.profiler, measure the machine's peaks, launch ranks."""
