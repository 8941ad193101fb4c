"""petseg: pet/background segmentation on Oxford-IIIT Pet, orchestrated by DVC.

Sub-packages by concern, each importing only those listed before it (a test reads the imports):
``core`` (errors, atomic writes, the params schema, device choices), ``data`` (the raw archives,
the split, the cache and its loaders), ``models`` (architectures, registry, checkpoints),
``evaluate`` (metrics, scoring, inference, ONNX export), ``train`` (the loop, losses, schedules,
resume, DDP), ``report`` (figures), ``serve`` (``petseg predict`` and its command line).
"""
