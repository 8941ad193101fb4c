"""Judging a trained model: Dice/IoU from confusion counts, scoring at each photo's own size,
logits from PyTorch or ONNX Runtime (with TTA), the ONNX export and its parity check, and the
record of the threshold and TTA that the test metrics used."""
