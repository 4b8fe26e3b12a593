"""Synchronised batch norm for multi-GPU training: a thin layer over ``torch.nn.SyncBatchNorm``.

The reference shipped its own communication code here; torch has done this natively for years. Batch
statistics are synchronised across the processes of a ``torch.distributed`` group (one process per GPU,
launched with ``torchrun``); on one process SyncBatchNorm falls back to plain batch norm in recent torch.
"""
from torch import nn

SynchronizedBatchNorm2d = nn.SyncBatchNorm


def convert_model(module, process_group=None):
    """Return ``module`` with every BatchNorm*d replaced by SyncBatchNorm (weights and statistics kept).

    State-dict keys are unchanged, so checkpoints stay in the published format.
    """
    return nn.SyncBatchNorm.convert_sync_batchnorm(module, process_group=process_group)


class DataParallelWithCallback(nn.DataParallel):
    """Kept for old scripts that import it. Plain ``DataParallel``: batch norm statistics are *not* synchronised
    across GPUs this way; use ``torchrun`` (DistributedDataParallel) with ``use_sync_bn`` for that."""


__all__ = ["SynchronizedBatchNorm2d", "convert_model", "DataParallelWithCallback"]
