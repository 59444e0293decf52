"""Inference backends, selected by name.

``transformers`` runs the model in this process on a GPU (or CPU); ``openai`` sends requests to
any OpenAI-compatible chat-completions server (vLLM, SGLang), which is how users scale past one
GPU. The heavy dependencies are imported only when a backend is created.
"""

from __future__ import annotations

from typing import Any

from spatialthinker_ros.backends.base import (
    Backend,
    BackendError,
    BackendOutput,
    GenerationSettings,
)

BACKEND_NAMES: tuple[str, ...] = ("transformers", "openai")

__all__ = [
    "BACKEND_NAMES",
    "Backend",
    "BackendError",
    "BackendOutput",
    "GenerationSettings",
    "create_backend",
]


def create_backend(name: str, **options: Any) -> Backend:
    """Create a backend by name.

    Args:
        name: "transformers" or "openai".
        **options: Keyword arguments of the backend's constructor.

    Returns:
        The backend, not yet loaded.

    Raises:
        ValueError: For an unknown name.
    """
    key = name.strip().lower()
    if key == "transformers":
        from spatialthinker_ros.backends.transformers_backend import TransformersBackend

        return TransformersBackend(**options)
    if key == "openai":
        from spatialthinker_ros.backends.openai_backend import OpenAIBackend

        return OpenAIBackend(**options)
    raise ValueError(f"unknown backend {name!r}; choose one of {', '.join(BACKEND_NAMES)}")
