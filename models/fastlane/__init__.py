"""The fast lane: gradient-boosted models per horizon, their training, registry and inference."""
