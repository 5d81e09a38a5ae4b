"""An OpenAI-compatible inference server with continuous batching and streaming."""

from llamaforge_serve.errors import ServeError

__version__ = "0.1.0"


def build(*args, **kwargs):
    """(app, engine) for a model dir; see :func:`llamaforge_serve.server.build`."""
    from llamaforge_serve.server import build as _build

    return _build(*args, **kwargs)


__all__ = ["ServeError", "__version__", "build"]
