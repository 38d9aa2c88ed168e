"""Counting compilations and their phases from `jax.monitoring` events.

Every `jax.jit` cache miss traces the function (`/jax/core/compile/jaxpr_trace_duration`),
lowers it (`/jax/core/compile/jaxpr_to_mlir_module_duration`) and compiles it for the backend
(`/jax/core/compile/backend_compile_duration`), also when the executable then comes from the
persistent compilation cache, which `/jax/compilation_cache/cache_hits` counts. A cache hit of
`jit`'s in-memory cache records none of them.
"""

from __future__ import annotations

import jax

TRACE_EVENT = "/jax/core/compile/jaxpr_trace_duration"
LOWER_EVENT = "/jax/core/compile/jaxpr_to_mlir_module_duration"
BACKEND_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
CACHE_HIT_EVENT = "/jax/compilation_cache/cache_hits"
PHASES = {TRACE_EVENT: "trace", LOWER_EVENT: "lower", BACKEND_COMPILE_EVENT: "compile"}


class CompileCounter:
    """Records the compilation events of the block it is entered for.

    Usage::

        with CompileCounter() as counter:
            step(state, batch)
        counter.count("train_step"), counter.seconds("compile", "train_step")

    Attributes:
        events: `(phase, function name, seconds)` in order; phase is "trace", "lower" or "compile".
        cache_hits: persistent compilation cache hits.
    """

    def __init__(self):
        self.events: list[tuple[str, str, float]] = []
        self.cache_hits = 0

    def _on_duration(self, event: str, duration_secs: float, **kwargs) -> None:
        if event in PHASES:
            self.events.append((PHASES[event], str(kwargs.get("fun_name", "?")), float(duration_secs)))

    def _on_event(self, event: str, **kwargs) -> None:
        if event == CACHE_HIT_EVENT:
            self.cache_hits += 1

    def __enter__(self) -> CompileCounter:
        jax.monitoring.register_event_duration_secs_listener(self._on_duration)
        jax.monitoring.register_event_listener(self._on_event)
        return self

    def __exit__(self, *exc) -> None:
        jax.monitoring.unregister_event_duration_listener(self._on_duration)
        jax.monitoring.unregister_event_listener(self._on_event)

    def count(self, function: str = "") -> int:
        """Backend compilations (jit cache misses) of functions whose name contains `function`."""
        return sum(phase == "compile" and function in name for phase, name, _ in self.events)

    def seconds(self, phase: str, function: str = "") -> float:
        """Total wall seconds of `phase` ("trace", "lower", "compile") for matching functions."""
        if phase not in PHASES.values():
            raise ValueError(f"phase must be one of {sorted(PHASES.values())}, got {phase!r}")
        return sum(t for p, name, t in self.events if p == phase and function in name)
