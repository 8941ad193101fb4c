"""petseg: semantic segmentation of Oxford-IIIT Pet (pet vs background, or the trimap's three classes) and of
a user's folder of images and label masks, orchestrated by DVC.

Sub-packages by concern, each importing only those listed before it (a test reads the imports):
``core`` (errors, atomic writes, the params schema, device choices), ``data`` (the raw archives, the
pets' tasks and folder datasets, the split, the cache and its loaders), ``models`` (architectures,
registry, checkpoints), ``evaluate`` (metrics, scoring, inference, ONNX export), ``train`` (the loop,
losses, schedules, resume, DDP), ``report`` (figures), ``cli`` (the ``petseg``
command line: ``petseg predict``, ``petseg diff``, ``petseg params``).
"""
