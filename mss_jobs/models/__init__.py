"""Separators: the protocol, the registry, built-in DSP models."""
