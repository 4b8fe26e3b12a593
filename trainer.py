"""The plumbing both training stages share (``train.py``, ``train_avd.py``): processes, seeding, data loading,
resuming, mixed precision, interruption and the per-step check of the losses.

Distributed runs are launched by ``torchrun`` (see ``run.py``); every helper here also works in one process.
The config's ``batch_size`` is the global batch: each of the N processes loads ``batch_size / N`` items.
Randomness is re-seeded at the start of every epoch from (seed, epoch, rank), so a resumed run draws the same
pairs, augmentations and random warps as one that never stopped.
"""
import bisect
import itertools
import random
import signal
import threading
import time
from typing import NamedTuple, Optional

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.optim.lr_scheduler import MultiStepLR
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler
from tqdm import tqdm

from checkpoint import load_checkpoint
from frames_dataset import DatasetRepeater
from logger import format_losses
from sync_batchnorm import convert_model


class TrainingError(RuntimeError):
    """A run that cannot start or go on; the message says why and what was kept."""


class TrainingInterrupted(TrainingError):
    """SIGINT or SIGTERM stopped the run after its checkpoint was written; ``exit_code`` is 128 + the signal."""

    def __init__(self, signal_name, checkpoint_path):
        self.exit_code = 128 + int(getattr(signal.Signals, signal_name, signal.SIGTERM))
        where = f"wrote {checkpoint_path}" if checkpoint_path else "rank 0 wrote the checkpoint"
        super().__init__(f"interrupted by {signal_name}: {where}; resume with --checkpoint")


# --------------------------------------------------------------------------------------------------------------
# Processes


def is_distributed():
    return dist.is_available() and dist.is_initialized()


def rank_and_world():
    """(rank, number of processes); (0, 1) outside torch.distributed."""
    return (dist.get_rank(), dist.get_world_size()) if is_distributed() else (0, 1)


def barrier():
    if is_distributed():
        dist.barrier()


def distribute(module, device, sync_bn=False, find_unused_parameters=False):
    """Wrap ``module`` in DistributedDataParallel when several processes run, with SyncBatchNorm if asked."""
    if not is_distributed():
        return module
    if sync_bn and device.type == "cuda":
        module = convert_model(module)
    elif sync_bn and dist.get_rank() == 0:
        print("use_sync_bn: torch's SyncBatchNorm needs GPUs; batch norms stay per-process on the CPU")
    device_ids = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=device_ids, find_unused_parameters=find_unused_parameters)


# --------------------------------------------------------------------------------------------------------------
# Seeding and data


def seed_epoch(seed, epoch, rank=0):
    """Seed python, numpy and torch from (seed, epoch, rank); returns a further seed for the data loader."""
    python_seed, numpy_seed, torch_seed, loader_seed = np.random.SeedSequence([seed, epoch, rank]).generate_state(4)
    random.seed(int(python_seed))
    np.random.seed(int(numpy_seed))
    torch.manual_seed(int(torch_seed))
    return int(loader_seed)


def _ignore_stop_signals(worker_id):
    """Data workers leave Ctrl-C and SIGTERM to the main process, which finishes its step, writes a checkpoint
    and then ends them: a terminal's Ctrl-C, a cluster's job stop or ``pkill -f`` signals every process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def make_loader(dataset, params, device, section, seed=0):
    """Shuffled loader over ``dataset`` repeated ``num_repeats`` times per epoch, full batches only.

    ``params`` is the stage's section (``train_params`` / ``train_avd_params``), named ``section`` in messages.
    """
    rank, world = rank_and_world()
    if params["num_repeats"] != 1:
        dataset = DatasetRepeater(dataset, params["num_repeats"])
    if params["batch_size"] % world:
        raise TrainingError(f"{section}.batch_size ({params['batch_size']}) is the global batch and must divide "
                            f"evenly among the {world} processes")
    batch_size = params["batch_size"] // world
    generator = torch.Generator()
    sampler = (DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=seed, drop_last=True)
               if world > 1 else RandomSampler(dataset, generator=generator))
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=params["dataloader_workers"],
                        drop_last=True, pin_memory=device.type == "cuda", generator=generator,
                        worker_init_fn=_ignore_stop_signals)
    if len(loader) == 0:
        raise TrainingError(f"an epoch has {len(dataset)} training pairs ({section}.num_repeats = "
                            f"{params['num_repeats']}), fewer than one batch of {batch_size} per process: lower "
                            f"{section}.batch_size or raise {section}.num_repeats")
    return loader


def start_epoch(loader, seed, epoch):
    """Re-seed everything for ``epoch`` (see the module docstring)."""
    rank, _ = rank_and_world()
    loader.generator.manual_seed(seed_epoch(seed, epoch, rank))
    if isinstance(loader.sampler, DistributedSampler):
        loader.sampler.set_epoch(epoch)


# --------------------------------------------------------------------------------------------------------------
# Resuming


def adam(parameters, lr, device):
    """Adam with the paper's betas (0.5, 0.999); its fused kernel, one pass over each tensor, where torch has it
    for ``device`` (CUDA; CPUs from torch 2.4): the same update up to float rounding."""
    version = tuple(int(part) for part in torch.__version__.split(".")[:2] if part.isdigit())
    fused = device.type == "cuda" or (device.type == "cpu" and version >= (2, 4))
    return torch.optim.Adam(parameters, lr=lr, betas=(0.5, 0.999), **({"fused": True} if fused else {}))


def make_scheduler(optimizer, milestones):
    """The learning rate divided by 10 at each milestone epoch; stepped once per epoch."""
    return MultiStepLR(optimizer, milestones=milestones, gamma=0.1)


def resume(checkpoint_path, networks, optimizer, scheduler, stage, base_lr, config_name, device, optional=()):
    """Load a checkpoint into ``networks``, the ``optimizer_<stage>`` and the ``scheduler_<stage>``.

    Returns (the first epoch to train, the checkpoint dict). The first epoch is the one after the checkpoint's
    ``epoch_<stage>`` (0 when the checkpoint has none, e.g. a first-stage checkpoint for the AVD stage). The
    learning rate is the one the config's ``lr`` and ``epoch_milestones`` give at that epoch, so a run resumed
    with a longer schedule follows the new one (files without a scheduler state, the published ones, too).
    Networks named in ``optional`` keep their weights when the file lacks them.
    """
    checkpoint = load_checkpoint(checkpoint_path, networks, {f"optimizer_{stage}": optimizer},
                                 config_name=config_name, map_location=device, optional=optional)
    first_epoch = checkpoint[f"epoch_{stage}"] + 1 if f"epoch_{stage}" in checkpoint else 0
    config_milestones = scheduler.milestones.copy()
    milestones = sorted(config_milestones.elements())
    if f"scheduler_{stage}" in checkpoint:
        scheduler.load_state_dict(checkpoint[f"scheduler_{stage}"])  # step count and the like
        saved = sorted(scheduler.milestones.elements())
        if saved != milestones and rank_and_world()[0] == 0:
            print(f"note: {checkpoint_path} was trained with epoch_milestones {saved}; "
                  f"continuing with the config's {milestones}")
        scheduler.milestones = config_milestones
    lr = base_lr * scheduler.gamma ** bisect.bisect_right(milestones, first_epoch)
    for group in optimizer.param_groups:
        group["initial_lr"], group["lr"] = base_lr, lr
    scheduler.base_lrs = [base_lr] * len(optimizer.param_groups)
    scheduler.last_epoch = first_epoch
    scheduler._last_lr = [lr] * len(optimizer.param_groups)
    return first_epoch, checkpoint


def checkpoint_name(epoch, stage, interrupted=False):
    """``00000012-cpk-reconstruction.pth``; an interrupted epoch's file is ``...-interrupted-cpk-<stage>.pth``."""
    return f"{epoch:08d}-{'interrupted-' if interrupted else ''}cpk-{stage}.pth"


# --------------------------------------------------------------------------------------------------------------
# Mixed precision


class MixedPrecision:
    """Autocast and a grad scaler on CUDA for ``mode`` 'bf16' or 'fp16' (scaled); plain float32 otherwise."""

    def __init__(self, mode, device):
        self.device_type = device.type
        self.enabled = device.type == "cuda" and mode != "none"
        self.dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(mode, torch.float32)
        scaled = self.enabled and mode == "fp16"
        self.scaler = (torch.amp.GradScaler("cuda", enabled=scaled) if hasattr(torch.amp, "GradScaler")
                       else torch.cuda.amp.GradScaler(enabled=scaled))  # torch < 2.3
        if mode != "none" and device.type != "cuda" and rank_and_world()[0] == 0:
            print(f"mixed_precision: {mode} applies on CUDA only; training in float32 on {device}")

    def autocast(self):
        return torch.autocast(device_type=self.device_type, dtype=self.dtype, enabled=self.enabled)

    def backward_and_step(self, loss, optimizer):
        optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(optimizer)
        self.scaler.update()


# --------------------------------------------------------------------------------------------------------------
# Interruption and the per-step check


class GracefulStop:
    """Within ``with GracefulStop() as stop:``, SIGINT and SIGTERM set ``stop.requested`` instead of killing the
    process, so the loop can finish its step and write a checkpoint. A second Ctrl-C interrupts at once."""

    def __init__(self):
        self.requested = None
        self._previous = {}

    def _handle(self, signum, frame):
        if self.requested is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = signal.Signals(signum).name
        print(f"{self.requested}: finishing this step, then writing a checkpoint (Ctrl-C again to abort)",
              flush=True)

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc):
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        return False


def summarise_step(losses, stop_requested, device):
    """The step's losses as floats, averaged over processes, and whether any process was asked to stop.

    One small all-reduce per step keeps every process stopping at the same step, whether for a signal or for a
    loss that is not finite (a NaN anywhere makes the average NaN everywhere).
    """
    names = list(losses)
    values = torch.stack([losses[n].detach().float().reshape(()) for n in names]
                         + [torch.tensor(float(stop_requested is not None), device=device)])  # (L + 1,)
    if is_distributed():
        dist.all_reduce(values)
        values = values / dist.get_world_size()
    values = values.tolist()
    return dict(zip(names, values[:-1])), values[-1] > 0


class EpochResult(NamedTuple):
    """What one pass over the data leaves: its last batch and forward outputs (for the picture), where it was
    interrupted (None when it ran to the end), and its duration in seconds."""
    batch: dict
    out: dict
    interrupted_at: Optional[dict]
    seconds: float


def run_epoch(forward, loader, optimizer, mixed, logger, stop, epoch, last_checkpoint, device, desc="epoch"):
    """One pass over ``loader`` for either stage: forward, check, step, log.

    ``forward(batch) -> (losses, out)`` with ``losses`` a dict of scalars, summed into the training loss. The
    numbers are checked before the step (see :func:`check_finite`); a stop requested on any process ends the
    pass after its step, with ``interrupted_at`` set.
    """
    started = time.time()
    bar = tqdm(loader, desc=f"{desc} {epoch}", disable=rank_and_world()[0] != 0, dynamic_ncols=True, leave=False)
    interrupted_at, batch, out, batches = None, None, None, iter(bar)
    for iteration in itertools.count():
        try:
            batch = next(batches)
        except StopIteration:
            break
        except RuntimeError:  # a SIGTERM to the process group can kill the data workers before our own check
            if not stop.requested:
                raise
            interrupted_at = {"epoch": epoch, "iteration": iteration - 1}  # the last step taken
            break
        try:
            losses, out = forward(batch)
        except torch.linalg.LinAlgError as e:  # e.g. the SVD of region covariances gone NaN
            raise diverged(epoch, iteration, last_checkpoint, f"the forward pass failed ({e})") from None
        values, stopping = summarise_step(losses, stop.requested, device)
        check_finite(values, epoch, iteration, last_checkpoint)
        mixed.backward_and_step(sum(losses.values()), optimizer)
        logger.log_iter(values)
        bar.set_postfix({k: f"{v:.4g}" for k, v in values.items()}, refresh=False)
        if stopping:
            interrupted_at = {"epoch": epoch, "iteration": iteration}
            break
    bar.close()
    return EpochResult(batch, out, interrupted_at, time.time() - started)


def check_finite(losses, epoch, iteration, last_checkpoint):
    """Raise TrainingError naming the losses that are NaN or infinite and the checkpoint that was kept."""
    bad = {name: value for name, value in losses.items() if not np.isfinite(value)}
    if bad:
        raise diverged(epoch, iteration, last_checkpoint,
                       f"loss is not finite ({', '.join(f'{k} = {v}' for k, v in bad.items())})")


def diverged(epoch, iteration, last_checkpoint, what):
    """The error that stops a run whose numbers went NaN or infinite, before the step is taken."""
    kept = f"the last good checkpoint is {last_checkpoint}" if last_checkpoint else "no checkpoint was written"
    return TrainingError(f"{what} at epoch {epoch}, iteration {iteration}; stopping without taking the step: "
                         f"{kept}. Lower the learning rate or check the data.")


def train_epochs(forward, loader, optimizer, scheduler, mixed, logger, params, first_epoch, seed, last_saved, device,
                 save, picture, tag, desc="epoch"):
    """The epoch loop both stages share: run an epoch, step the schedule, log, draw, checkpoint.

    Args:
        forward: batch -> (losses, outputs); see :func:`run_epoch`.
        save: ``save(epoch, interrupted_at=None)`` writes a checkpoint and returns its path (rank 0 only).
        picture: ``picture(result)`` -> uint8 image of the epoch, saved as ``train-vis/<epoch>-<tag>.png``.
    A Ctrl-C or SIGTERM ends the current step, writes a checkpoint and raises TrainingInterrupted.
    Returns the path of the last checkpoint written.
    """
    main = logger.enabled
    with GracefulStop() as stop:
        for epoch in range(first_epoch, params["num_epochs"]):
            start_epoch(loader, seed, epoch)
            result = run_epoch(forward, loader, optimizer, mixed, logger, stop, epoch, last_saved, device, desc=desc)
            if result.interrupted_at is not None:
                path = save(epoch, interrupted_at=result.interrupted_at) if main else None
                raise TrainingInterrupted(stop.requested or "SIGTERM", path)
            lr = optimizer.param_groups[0]["lr"]  # the rate this epoch used
            scheduler.step()
            means = logger.log_epoch(epoch, lr=lr, seconds=result.seconds)
            if main:
                print(format_losses(epoch, means))
                logger.save_image(f"{epoch:08d}-{tag}.png", picture(result))
                if (epoch + 1) % params["checkpoint_freq"] == 0 or epoch + 1 == params["num_epochs"]:
                    last_saved = save(epoch)
            barrier()
    return last_saved
