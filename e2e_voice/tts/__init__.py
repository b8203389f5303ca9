"""Text-to-speech engines used for data generation, the cascade baseline and the demo."""
