"""Renderers of a Report: terminal text (more to come: HTML, TensorBoard)."""
