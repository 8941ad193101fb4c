"""The ``petseg`` command line: ``petseg predict`` (a trained model on any photos), ``petseg diff``
(two evaluations compared, with a paired bootstrap), ``petseg seeds`` (each model's spread over training seeds)
and ``petseg params`` (every params.yaml key)."""
