"""The service: a long-running HTTP server that places new images, audio clips (an audio
model) or vectors into the clusters of a saved model in milliseconds
(``mediacluster serve MODEL_OR_RUN``).

* ``model.ModelHolder``: the model version served, switched atomically when a newer version
  is published (file watch on the store's ``LATEST`` + ``POST /v1/reload``);
* ``batcher.MicroBatcher``: concurrent uploads (images or audio clips) encoded together;
* ``app.create_service``: the FastAPI app (``/v1/assign``, ``/v1/clusters``, ``/v1/model``,
  ``/v1/reload``, ``/healthz``, ``/readyz``, ``/metrics``, ``/docs``) on ``mediacluster.web``.
"""

from .app import ServeOptions, build_service, create_service
from .batcher import MicroBatcher
from .model import ModelHolder, Served

__all__ = ["ModelHolder", "MicroBatcher", "Served", "ServeOptions", "build_service", "create_service"]
