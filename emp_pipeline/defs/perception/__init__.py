"""Perception: sensory features and market regimes."""
