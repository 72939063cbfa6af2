"""The sentiment service: headlines in, per-ticker transformer sentiment out."""
