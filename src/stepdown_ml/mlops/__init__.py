"""MLflow: tracking a training run, the registry gates, and the pyfunc that serves a model."""
