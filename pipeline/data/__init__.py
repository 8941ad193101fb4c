"""The dataset from source to batches: the official layout and its two tarballs, the download and
synthetic sources, the train/valid/test split, decoding pairs into the memory-mapped cache and the
report of skipped pairs, bit-packed native-size masks, augmentation and the seeded loaders."""
