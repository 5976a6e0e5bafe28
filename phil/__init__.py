"""PHIL parameter definitions."""
