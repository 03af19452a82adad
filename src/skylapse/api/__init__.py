"""The services' HTTP APIs (FastAPI, served by uvicorn).

* `skylapse.api.common`     the app factory every service uses: health, metrics, docs, hooks.
* `skylapse.api.auth`       bearer token (constant-time) for HTTP and WebSocket.
* `skylapse.api.middleware` correlation ids, request-size limit, JSON error handlers.
* `skylapse.api.ws`         the WebSocket event hub.
* `skylapse.api.processing` the processing service (`skylapse serve processing`).
"""
