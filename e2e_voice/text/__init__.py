"""Text language models (SmolLM2 from the bundle) used for answers and as LM initialisation."""
