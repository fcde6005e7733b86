"""Stage 2, analysis: typed events into conv layers, their kernels, conversions, roofline, the GPU timeline,
communication and the job view. No torch."""
