"""The always-on side of bearwatch: consume news, retrieve history, score with ONNX, detect, alert.

Never imports :mod:`training`, so the daemon runs without torch.
"""
