"""Responsible voice: watermarking of generated audio and consent-gated custom voices."""
