"""Audio edge: decode, probe, resample and encode, block by block."""
