"""HTTP serving of any task's inference class: FastAPI + uvicorn with dynamic batching.

* :mod:`attnkit.serve.batcher`: concurrent requests queued and run together by one worker thread;
* :mod:`attnkit.serve.backends`: translation, embedding and classification backends;
* :mod:`attnkit.serve.app`: the app (endpoints, limits, API key, JSON errors, OpenAPI);
* :mod:`attnkit.serve.page`: the page at ``/`` (translation and its attention);
* :mod:`attnkit.serve.server`: running it with uvicorn (loopback by default; SIGTERM drains).

Needs the ``serve`` extra (``pip install 'attnkit[serve]'``); nothing here is imported by
``import attnkit``.
"""
