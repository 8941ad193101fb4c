"""Training a model: the training view of params, the set-up and epoch loop, losses, optimisers
and lr schedules, the resume state written after every epoch, and data-parallel training (DDP)."""
