"""Command-line options the CLI tests share."""

from __future__ import annotations

IDENTITY_WAV32 = ("--model", "identity", "--format", "wav", "--bit-depth", "32")
"""`mss submit` options for the identity model with 32-bit float WAV stems (exact round trip)."""
