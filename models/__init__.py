"""Training pipelines and the model registry (fast-lane models arrive with the decision-spine issue)."""
