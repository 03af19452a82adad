"""The processing service's endpoints, one module-level ``APIRouter`` per resource.

The app factory (`skylapse.api.processing.app`) includes them with the token dependency
(``sequences``, ``jobs``, ``timelapses``), the media token (``media``: also ``?token=``) or
none (``ws``: the socket checks its token itself). Each route reaches the service's state
through the :data:`~skylapse.api.processing.runtime.Runtime` dependency.
"""
