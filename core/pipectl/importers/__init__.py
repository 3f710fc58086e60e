"""Converters from other pipeline formats into pipectl pipeline files."""
