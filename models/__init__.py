"""Networks, enrollment, image formation and avatar bundles for relitcam."""
