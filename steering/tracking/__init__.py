"""MLflow: set-up, one job end to end, results on disk then in MLflow, resume, preflight, links."""
