"""sync_batchnorm is torch's SyncBatchNorm: conversion keeps checkpoint keys, weights and statistics."""
import torch
from torch import nn

from config import validate_config
from modules.build import build_models
from sync_batchnorm import DataParallelWithCallback, SynchronizedBatchNorm2d, convert_model
from tiny import tiny_model_params


def test_conversion_keeps_the_published_state_dict():
    torch.manual_seed(0)
    generator = build_models(validate_config({"model_params": tiny_model_params()}))["generator"]
    with torch.no_grad():
        for module in generator.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-1, 1)
    before = {k: v.clone() for k, v in generator.state_dict().items()}
    converted = convert_model(generator)
    norms = [m for m in converted.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert norms and all(isinstance(m, nn.SyncBatchNorm) for m in norms)
    after = converted.state_dict()
    assert list(after) == list(before)
    assert all(torch.equal(after[k], before[k]) for k in before)


def test_aliases_are_torchs_own():
    assert SynchronizedBatchNorm2d is nn.SyncBatchNorm
    assert issubclass(DataParallelWithCallback, nn.DataParallel)
