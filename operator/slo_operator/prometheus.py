"""Placeholder laid by the foundation issue; filled in by the operator issue."""
