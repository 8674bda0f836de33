"""A run's inputs: the user's files or the embedded demo, and the checks of files against the model."""
