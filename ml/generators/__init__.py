"""Proposal generators that need no model weights (pure: numpy and SciPy, no database, no torch)."""
