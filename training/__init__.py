"""The model-building side of bearwatch: retrieval-augmented fine-tuning, evaluation, ONNX export.

May import the pure parts of :mod:`monitor` (schema, model-input building, retrieval queries,
registry manifest); never the other way round.
"""
