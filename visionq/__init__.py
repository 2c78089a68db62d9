"""visionq: a job service in front of Xiaomi MiMo's image understanding."""

__version__ = "0.1.0"
