"""Fault drills against the real services: `bearwatch drill NAME` (see drills/run.py)."""
