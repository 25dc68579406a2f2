"""Session fixtures for training results (owned by the training stage)."""
