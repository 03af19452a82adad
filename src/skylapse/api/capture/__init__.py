"""The capture service's API: the station's status, plan, configuration, frames and live view.

``app.create_capture_app(config, token)`` builds it: ``runtime`` (the camera supervisor, event
pump, ticker, transfers and alerts beside the API), ``health`` (``/health``'s checks and the
alert conditions), ``routes/`` (one router per resource), ``models`` (every JSON body),
``config_patch`` (``PUT /config``'s merge) and ``images`` (JPEG previews and reductions).
"""
