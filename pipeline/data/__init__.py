"""The dataset from source to batches: the official layout and its two tarballs, a user's folder of
images and label masks and its classes, the download and synthetic sources, the train/valid/test split,
decoding pairs into the memory-mapped cache at the scale photos are taken at (square or kept aspect), the
pixels by class and their balancing weights, the report of skipped pairs, packed native-size masks,
augmentation (on the loader's workers or batch-wise on the training device) and the seeded loaders."""
