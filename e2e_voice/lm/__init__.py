"""Joint speech-text model (Moshi-style): multistream tokens, builders, training loss, generation step."""
