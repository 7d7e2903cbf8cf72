"""relitcam: models/speech."""
