"""The ``petseg`` command line: ``petseg predict`` (a trained model on any photos), ``petseg diff``
(two evaluations compared, with a paired bootstrap) and ``petseg params`` (every params.yaml key)."""
