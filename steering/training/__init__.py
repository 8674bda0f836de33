"""Training the LRM model: the loop, its pass-weighted loss, validation r and checkpoint choice."""
