"""Operator tools: board bundles, device enrollment, ONNX export and import."""
