"""Image helpers shared by the capture and the processing services.

- :mod:`skylapse.imaging.srgb`: the frame convention (uint16 RGB, sRGB-encoded) and the sRGB
  transfer curve, through lookup tables;
- :mod:`skylapse.imaging.luma`: Rec. 709 luminance weights, the luminance of an image and the
  central log2 luminance that flicker is measured in;
- :mod:`skylapse.imaging.affine`: 2x3 affine transforms (compose, invert, resized grids);
- :mod:`skylapse.imaging.pyramid`: Gaussian pyramids and the coordinates of their levels;
- :mod:`skylapse.imaging.hlg`: the BT.2100 HLG transfer and the BT.709 -> BT.2020 primaries of
  the HDR video;
- :mod:`skylapse.imaging.scratch`: per-thread scratch buffers for hot loops.

Pure functions on numpy arrays (the scratch buffer aside), with numpy and OpenCV only: the
capture service imports this package, never :mod:`skylapse.processing`. Import the submodules
themselves; this package imports none of them.
"""
