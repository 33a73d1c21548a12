"""Real-time serving: a trained run directory behind FastAPI (``larr serve``), ONNX export (``larr export``).

Modules, each with one job: :mod:`~larr.serve.settings` (limits), :mod:`~larr.serve.artifacts`
(where a model and its export live, versions), :mod:`~larr.serve.inputs` (request → field
indices), :mod:`~larr.serve.scenes` (scene values → cached LLM vectors), :mod:`~larr.serve.graph`
(the scoring graph both backends run), :mod:`~larr.serve.ranker` (all of it loaded, one call to
rank), :mod:`~larr.serve.export` (ONNX), :mod:`~larr.serve.schemas` (the HTTP contract),
:mod:`~larr.serve.metrics` (Prometheus), :mod:`~larr.serve.journal` (the append-only log of new
vectors beside an on-disk store), :mod:`~larr.serve.explorer` (what the scene explorer page at
``GET /`` reads; the page itself is ``static/``), :mod:`~larr.serve.app` (FastAPI + uvicorn).
Nothing heavy is imported here, so ``import larr`` stays fast.
"""
