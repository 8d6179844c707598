"""The thread budget: explicit, from the environment, or half the usable cores."""

from __future__ import annotations

import pytest

from distill import threads


def test_budget_defaults_to_half_the_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(threads.ENV, raising=False)
    monkeypatch.setattr(threads, "usable_cores", lambda: 16)
    assert threads.thread_budget() == 8
    monkeypatch.setattr(threads, "usable_cores", lambda: 1)
    assert threads.thread_budget() == 1  # never zero
    monkeypatch.setenv(threads.ENV, "3")
    assert threads.thread_budget() == 3
    assert threads.thread_budget(5) == 5  # a flag beats the environment


def test_applying_the_budget_sets_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    before = torch.get_num_threads()
    try:
        monkeypatch.setenv(threads.ENV, "1")
        assert threads.apply_thread_budget() == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
