"""Test sets, metrics and recorded experiment runs."""
