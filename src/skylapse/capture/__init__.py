"""The capture service that runs on the Pi: cameras, scheduling, exposure and the local buffer."""
