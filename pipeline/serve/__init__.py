"""Using a trained model on any photos: ``petseg predict`` and the ``petseg`` command line."""
