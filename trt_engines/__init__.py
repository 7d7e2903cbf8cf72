"""relitcam: trt_engines."""
