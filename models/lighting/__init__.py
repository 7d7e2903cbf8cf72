"""relitcam: models/lighting."""
