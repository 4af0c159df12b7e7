"""Name -> backend registries for embedders and rerankers.

A backend is registered as a `"module:callable"` string, so listing backends (for `--help`, for the
UI's dropdowns) imports nothing heavy. `get()` builds a backend once per (name, options) and caches
it; backends themselves load their weights lazily on first use, so creating one is cheap too.
An unknown name raises `UnknownBackendError` listing the known names; nothing returns None.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from mmembed.types import MMEmbedError

T = TypeVar("T")


class UnknownBackendError(MMEmbedError, KeyError):
    """Raised for a backend name nobody registered."""

    def __str__(self) -> str:  # KeyError would otherwise print the message in quotes
        return str(self.args[0])


class BackendUnavailableError(MMEmbedError, RuntimeError):
    """A known backend that cannot run here (weights missing offline, needs a GPU, ...)."""


@dataclass(frozen=True)
class BackendInfo:
    """What the UI and CLI show about a backend before anything is loaded."""

    name: str
    # "package.module:callable", resolved only when the backend is created; or the callable itself
    # (what `Registry.register_instance` uses for an object built elsewhere, e.g. a test's fake)
    factory: str | Callable[..., Any]
    description: str
    hub_id: str | None = None  # Hugging Face repo of the default weights; None for shipped/local models
    revision: str | None = None
    license: str | None = None
    needs_gpu: bool = False  # True: refuse to load on CPU unless forced (e.g. 7B models)
    allow_patterns: tuple[str, ...] = ()  # files `prefetch` downloads; empty means the whole repo
    # The registered name of this same model trained with random negatives only (its M_rand, the paper's
    # modality-biased baseline): the page's compare switch runs a query through both. None: no such twin.
    random_negatives: str | None = None


class Registry(Generic[T]):
    """Named backends of one kind, created lazily by name and cached per options."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._infos: dict[str, BackendInfo] = {}
        self._instances: dict[tuple[str, tuple[tuple[str, Any], ...]], T] = {}
        self._lock = threading.Lock()

    def register(self, info: BackendInfo) -> None:
        if info.name in self._infos:
            raise ValueError(f"{self.kind} {info.name!r} is registered twice")
        self._infos[info.name] = info

    def register_instance(self, name: str, backend: T, description: str = "", *,
                          random_negatives: str | None = None) -> None:
        """Register an already built backend under `name`: `get(name, ...)` returns it whatever the options.

        How the demo and the tests plug in fakes or in-memory models without touching private fields.
        """
        self.register(BackendInfo(name=name, factory=lambda **_: backend, description=description,
                                  random_negatives=random_negatives))

    def names(self) -> list[str]:
        return list(self._infos)

    def info(self, name: str) -> BackendInfo:
        try:
            return self._infos[name]
        except KeyError:
            known = ", ".join(self._infos) or "(none)"
            raise UnknownBackendError(f"unknown {self.kind} {name!r}; known: {known}") from None

    def factory(self, name: str) -> Callable[..., T]:
        factory = self.info(name).factory
        if callable(factory):
            return factory
        module_name, _, attr = factory.partition(":")
        return getattr(importlib.import_module(module_name), attr)

    def get(self, name: str, **options: Any) -> T:
        """The backend `name` built with `options`, created once and shared (thread-safe)."""
        key = (name, tuple(sorted(options.items())))
        with self._lock:
            if key not in self._instances:
                info = self.info(name)
                self._instances[key] = self.factory(name)(info=info, **options)
            return self._instances[key]

    def unavailable_reason(self, name: str, device: str = "auto") -> str | None:
        """Why `name` cannot be used right now, or None if it can (cheap: no weights are loaded)."""
        from mmembed.hub import weights_available

        info = self.info(name)
        if info.needs_gpu:
            from mmembed.devices import resolve_device

            if resolve_device(device) == "cpu":
                return "needs a GPU"
        if info.hub_id and not weights_available(info.hub_id, info.revision):
            return "weights not downloaded (offline)"
        return None

    def clear(self) -> None:
        """Drop cached instances (tests use this to load a backend afresh)."""
        with self._lock:
            self._instances.clear()
