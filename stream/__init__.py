"""relitcam: stream."""
