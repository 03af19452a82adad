"""The processing service's API (`skylapse serve processing`): sequences, render jobs, finished
timelapses, live progress. ``app.create_processing_app(settings)`` builds it; the endpoints are
listed in `skylapse.api.processing.app`.

==================  ===========================================================================
``app``             ``create_processing_app(settings)``: the factory
``settings``        ``ProcessingSettings``, ``PROCESSING_METRICS``
``runtime``         ``ProcessingRuntime`` (``app.state.runtime``) and the ``Runtime`` dependency
``background``      ``IngestLoop`` (the inbox scan) and ``JobWatcher`` (job events, metrics)
``health``          the ``/health`` checks
``models``          request and response bodies
``routes/``         one ``APIRouter`` per resource: sequences, jobs, timelapses, media, ws
==================  ===========================================================================
"""
