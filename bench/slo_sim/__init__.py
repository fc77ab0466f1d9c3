"""Trace-driven simulator of a fleet of batching model servers, with baseline autoscalers."""
