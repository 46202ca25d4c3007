"""Sessions on the shared model: their cache share, their memory budget, and closing a tab."""

from __future__ import annotations

from explorer.ui.explore import interpret_cells, run_prompt
from explorer.ui.session import AppConfig, ModelRegistry, Session


def drain(it) -> None:
    for _ in it:
        pass


def test_a_sessions_readings_are_charged_to_it_and_freed_when_it_closes():
    registry = ModelRegistry(AppConfig(session_cache_mb=1))
    ex = registry.get("default")
    a, b = Session(), Session()
    run_prompt(registry, a, "default", "The Eiffel Tower is in Paris", False)
    run_prompt(registry, b, "default", "Water boils at 100 degrees", False)
    settings = ex.settings("refers_to", max_new_tokens=4)
    drain(interpret_cells(registry, a, [(10, 2), (12, 3)], settings, batch_size=2))
    drain(interpret_cells(registry, b, [(8, 1)], settings, batch_size=1))
    cache = ex.interpreter.results
    assert cache.owner_bytes(a.session_id) > 0 and cache.owner_bytes(b.session_id) > 0
    assert cache.max_bytes_per_owner == 2**20
    n_before = len(cache)
    registry.forget_session(a)
    a.close()
    assert cache.owner_bytes(a.session_id) == 0 and len(cache) == n_before - 2
    assert cache.owner_bytes(b.session_id) > 0  # the other user's readings stay cached
    assert a.grid is None and a.results is None and b.grid is not None


def test_the_global_budget_drops_the_longest_idle_grid_first():
    registry = ModelRegistry(AppConfig())
    sessions = [Session() for _ in range(3)]
    for i, s in enumerate(sessions):
        run_prompt(registry, s, "default", f"Session number {i} writes a fairly ordinary sentence here", False)
    one = sessions[0].nbytes()
    registry.budget.max_bytes = int(2.5 * one)
    newest = Session()
    run_prompt(registry, newest, "default", "A newcomer arrives with a prompt of the same size, more or less", False)
    assert sessions[0].grid is None  # idle longest: dropped, its user is asked to run again
    assert newest.grid is not None and sessions[2].grid is not None
    assert registry.budget.total_bytes() <= registry.budget.max_bytes
