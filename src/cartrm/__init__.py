"""cartrm: Circuit-Aware Reward Training for long-tail robust reward models."""

__version__ = "0.1.0"
