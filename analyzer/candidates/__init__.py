"""The fixes rules propose: the Candidate type (a transform of a copy of the workload and what it promises about
numerics) and the model transforms. Rules build candidates from it; measuring applies them; neither imports the
other. Torch is imported only when a transform runs."""
