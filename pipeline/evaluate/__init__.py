"""Judging a trained model, one path for every task (a binary task is the two-class case): label maps and
C×C confusion matrices with every score derived from them (``confusion``), scoring at each photo's own
size (``scoring``), the headline, details and tables (``tables``), logits from PyTorch or ONNX Runtime with
TTA (``inference``), the ONNX export and its parity check, the record of the threshold and TTA the test
metrics used, and the paired bootstrap of a change (``compare``)."""
