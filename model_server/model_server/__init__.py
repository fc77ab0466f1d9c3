"""slo-autoscaler's model server: a PyTorch model behind dynamic batching and the Open Inference Protocol.

Importing this package must stay cheap and torch-free: the load generator lives here too.
"""
