"""Detection: pure spike detectors and their application to series and news keys."""
