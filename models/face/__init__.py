"""relitcam: models/face."""
