"""The local loop: real Prometheus, real model servers and the operator's controller on one machine."""
