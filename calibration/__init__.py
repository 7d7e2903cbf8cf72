"""relitcam: calibration."""
