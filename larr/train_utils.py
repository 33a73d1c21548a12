"""What every training loop (stage 1, stage 2, the CTR model) shares: the step count of a run,
its progress bar and its TensorBoard writer."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any


def total_steps(max_steps: int | None, epochs: float, per_epoch: int, per_step: int = 1) -> int:
    """``max_steps`` if set, else enough optimizer steps for ``epochs`` passes over ``per_epoch``
    units (blocks, pairs, batches) taken ``per_step`` at a time; at least one."""
    if max_steps is not None:
        return max_steps
    return max(1, math.ceil(epochs * per_epoch / per_step))


def progress_bar(total: int, desc: str, enabled: bool, unit: str = "text", initial: int = 0) -> Any:
    """A tqdm bar (``update``, ``set_postfix``, ``close``) that prints nothing unless ``enabled``."""
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit=unit, disable=not enabled)


def tb_writer(log_dir: Path | None, purge_step: int | None = None) -> Any:
    """A TensorBoard ``SummaryWriter`` on ``log_dir``, or None without a folder (or without
    tensorboard installed: it is optional at run time). ``purge_step``: a resumed run drops the
    events it logged after its checkpoint."""
    if log_dir is None:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(log_dir=str(log_dir), purge_step=purge_step)
