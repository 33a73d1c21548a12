"""Step counts, progress bars and TensorBoard writers shared by the training loops."""
from __future__ import annotations

from pathlib import Path

from larr.train_utils import progress_bar, tb_writer, total_steps


def test_total_steps_max_steps_wins_else_epochs_rounded_up() -> None:
    assert total_steps(7, 3.0, 1000, 10) == 7
    assert total_steps(None, 1.0, 25, 8) == 4  # stage 2: 25 pairs, batches of 8
    assert total_steps(None, 0.5, 10, 2) == 3  # stage 1: 10 batches an epoch, 2 accumulated per step
    assert total_steps(None, 1.0, 0, 8) == 1


def test_disabled_bar_and_missing_log_dir_are_silent(capsys, tmp_path: Path) -> None:
    bar = progress_bar(3, "x", enabled=False)
    bar.update(1)
    bar.set_postfix(loss="0.1")
    bar.close()
    assert capsys.readouterr().err == ""
    assert tb_writer(None) is None
    writer = tb_writer(tmp_path / "logs")
    writer.add_scalar("a", 1.0, 1)
    writer.close()
    assert any((tmp_path / "logs").iterdir())
