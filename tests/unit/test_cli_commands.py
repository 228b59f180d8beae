"""The command's tables agree with the modules it loads only when needed."""

from __future__ import annotations

from cli import main, operate


def test_replay_offers_exactly_the_read_models_it_can_rebuild() -> None:
    assert sorted(main.REPLAYABLE) == sorted(operate.READ_MODELS)
