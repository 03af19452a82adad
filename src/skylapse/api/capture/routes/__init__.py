"""The capture API's routes, one module-level ``APIRouter`` per resource. Each route gets the
app's :class:`~skylapse.api.capture.runtime.CaptureRuntime` through the ``Runtime``
dependency; the app adds the bearer token when it includes the routers (all but ``/ws``, which
authenticates its own way)."""
