"""Evaluation: metrics and the ``e2e-voice bench`` harness that drives any full-duplex system.

Imports the library (``e2e_voice``); the library never imports this package.
"""
