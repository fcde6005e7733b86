"""The Rule protocol, Finding and Candidate types, the registry and the built-in rules."""
