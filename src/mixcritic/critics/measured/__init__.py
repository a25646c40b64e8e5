"""The measured critic: stem levels relative to each other against a fitted model of natural balance."""
