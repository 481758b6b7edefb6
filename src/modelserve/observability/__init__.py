"""What the server measures about itself: statistics (Triton's extension), Prometheus metrics, the windowed
monitor, alerts, drift against reference profiles and the sampled prediction log."""
