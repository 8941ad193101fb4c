"""Figures for review from the training and evaluate outputs: curves, distributions, per-breed
bars, and masks drawn on test photos."""
