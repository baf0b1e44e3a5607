"""mss-jobs: music source separation at catalog scale."""

__version__ = "0.1.0"
