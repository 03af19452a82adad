"""The processing service: frames in, timelapses out.

Image algorithms here are pure functions on numpy arrays (frames in, frames out, no I/O);
`render` is the imperative shell that streams a folder of frames through them.
"""
