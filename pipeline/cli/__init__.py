"""The ``petseg`` command line: ``petseg predict`` (a trained model on any photos) and ``petseg diff``
(two evaluations compared, with a paired bootstrap)."""
