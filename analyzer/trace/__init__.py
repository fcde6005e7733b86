"""Stage 1, reading: a Kineto trace (JSON only, object or array form, gz or not) into typed events. No torch."""
