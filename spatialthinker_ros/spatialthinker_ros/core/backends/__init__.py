"""Inference backends, selected by name from one registry.

``transformers`` runs the model in this process on a GPU (or CPU); ``openai`` sends requests to
any OpenAI-compatible chat-completions server (vLLM, SGLang), which is how users scale past one
GPU. The heavy dependencies are imported only when a backend is created.

:data:`BACKENDS` is the one table of backends: the node's ``backend`` parameter, the CLI's
``--backend`` flag and the launch file's choices are its keys, and each entry says which node
parameters become which constructor options. Adding a backend is a module with a
:class:`~spatialthinker_ros.core.backends.base.Backend` subclass and one entry here.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from spatialthinker_ros.core.backends.base import (
    Backend,
    BackendError,
    BackendOutput,
    Batch,
    GenerationSettings,
)


@dataclass(frozen=True)
class BackendEntry:
    """One backend of the registry.

    Attributes:
        module: Module that defines it (imported only when the backend is created).
        class_name: Its :class:`Backend` subclass.
        options: Constructor keyword -> ``(node parameter, type)`` it is read from.
    """

    module: str
    class_name: str
    options: Mapping[str, tuple[str, type]]


#: Every backend by name. The first is the default.
BACKENDS: dict[str, BackendEntry] = {
    "transformers": BackendEntry(
        "spatialthinker_ros.core.backends.transformers_backend",
        "TransformersBackend",
        {
            "model": ("model", str),
            "device": ("device", str),
            "dtype": ("dtype", str),
            "attn_implementation": ("attn_implementation", str),
            "min_pixels": ("min_pixels", int),
            "max_pixels": ("max_pixels", int),
        },
    ),
    "openai": BackendEntry(
        "spatialthinker_ros.core.backends.openai_backend",
        "OpenAIBackend",
        {
            "model": ("model", str),
            "base_url": ("openai.base_url", str),
            "api_key_env": ("openai.api_key_env", str),
            "timeout_s": ("openai.timeout", float),
            "max_retries": ("openai.max_retries", int),
            "max_in_flight": ("openai.max_in_flight", int),
            "image_format": ("openai.image_format", str),
            "jpeg_quality": ("openai.jpeg_quality", int),
        },
    ),
}
#: The registry's names, in order (the ``backend`` parameter's choices).
BACKEND_NAMES: tuple[str, ...] = tuple(BACKENDS)

__all__ = [
    "BACKENDS",
    "BACKEND_NAMES",
    "Backend",
    "BackendEntry",
    "BackendError",
    "BackendOutput",
    "Batch",
    "GenerationSettings",
    "backend_options",
    "create_backend",
]


def _entry(name: str) -> BackendEntry:
    key = str(name).strip().lower()
    if key not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose one of {', '.join(BACKEND_NAMES)}")
    return BACKENDS[key]


def backend_options(name: str, values: Mapping[str, Any]) -> dict[str, Any]:
    """Constructor options of backend ``name`` from parameter values (the node's names).

    Raises:
        ValueError: For an unknown name.
    """
    entry = _entry(name)
    return {key: kind(values[param]) for key, (param, kind) in entry.options.items()}


def create_backend(name: str, **options: Any) -> Backend:
    """Create a backend by name.

    Args:
        name: A key of :data:`BACKENDS`.
        **options: Keyword arguments of the backend's constructor.

    Returns:
        The backend, not yet loaded.

    Raises:
        ValueError: For an unknown name.
    """
    entry = _entry(name)
    backend_class = getattr(importlib.import_module(entry.module), entry.class_name)
    return backend_class(**options)
