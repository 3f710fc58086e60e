"""Helpers of the plugin-system tests: fake installed distributions and the CLI in a subprocess.

Not collected by pytest (no ``test_*`` module here); the test modules import what they need.
"""
