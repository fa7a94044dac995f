"""Train, gate and register a scikit-learn classifier in the MLflow Model Registry."""
