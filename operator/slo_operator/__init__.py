"""slo-autoscaler's operator: keeps an inference service's P99 under target at the fewest replicas."""
