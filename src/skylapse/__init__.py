"""Skylapse: an unattended timelapse station and the service that turns its frames into films."""

__version__ = "0.1.0"
