"""Getting frames from the Pi to the processing host without losing one: rsync over SSH."""
