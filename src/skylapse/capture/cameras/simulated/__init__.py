"""The simulated camera, the embedded default: a procedural mountain scene lit by the real sun,
seen through a simulated lens and sensor. The whole capture service (scheduling, exposure
control, HDR, autofocus, the local buffer) runs end to end without hardware, and an evening can
be simulated in seconds with a :class:`~skylapse.capture.clock.SimulatedClock`.

One module per part:

- :mod:`.camera`: :class:`SimulatedCamera` (rendering, exposure, capture, autofocus, DNG);
- :mod:`.world`: :class:`Location`, :class:`SimWeather`, the sun's position;
- :mod:`.lens`: defocus blur;
- :mod:`.sensor`: the noise model, readout (``sensor_readout``) and development (``develop``);
- :mod:`.raw`: the Bayer mosaic and its DNG.

Frame pixels: uint16 RGB, sRGB-encoded, after white balance (the pipeline convention).

Nothing on a station with a real camera imports this package (`skylapse.capture.cameras` names
its classes lazily): it brings the procedural scene (`skylapse.scene`). This package's own
namespace is the public API (``__all__``).
"""

from skylapse.capture.cameras.simulated.camera import SimulatedCamera
from skylapse.capture.cameras.simulated.world import Location, SimWeather, WeatherSource

__all__ = ["Location", "SimWeather", "SimulatedCamera", "WeatherSource"]
