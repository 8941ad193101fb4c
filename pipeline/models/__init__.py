"""The networks: shared blocks, the UNet and the ResNet34-UNet (one file each), weight
initialisation and pretrained encoder weights, the registry that builds a model by name, and the
checkpoint file that carries a trained one."""
