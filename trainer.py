"""The plumbing both training stages share (``train.py``, ``train_avd.py``): processes, seeding, data loading,
the :class:`Stage` (what one stage is) with its one save and one resume, mixed precision, interruption and the
per-step check of the losses, and :func:`train_epochs`, the epoch loop.

Distributed runs are launched by ``torchrun`` (see ``run.py``); every helper here also works in one process.
The config's ``batch_size`` is the global batch: each of the N processes loads ``batch_size / N`` items.
Randomness is re-seeded at the start of every epoch from (seed, epoch, rank), so a resumed run draws the same
pairs, augmentations and random warps as one that never stopped; the learning rate, too, is a function of the
epoch alone (:class:`Schedule`).
"""
import bisect
import itertools
import os
import random
import signal
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, NamedTuple, Optional

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, default_collate
from tqdm import tqdm

from checkpoint import load_checkpoint, remove_stale_temporaries, save_checkpoint
from config import ConfigError
from device import has_native_bf16
from frames_dataset import DatasetRepeater, VideoReadError
from logger import format_losses
from sync_batchnorm import convert_model

GAMMA = 0.1  # the published schedule divides the learning rate by 10 at each milestone


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


def usable_workers(requested, section):
    """``requested`` data workers, but no more than the cores this process may run on (with a note when fewer):
    the published configs ask for 6 or more, which only slow a small machine down."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS and Windows have no affinity masks
        cores = os.cpu_count() or 1
    if requested <= cores:
        return requested
    if rank_and_world()[0] == 0:
        print(f"note: {section}.dataloader_workers is {requested}, and this process may use {cores} core(s): "
              f"loading with {cores} worker(s)")
    return cores


def collate_pairs(items):
    """torch's default collation, once the frames are known to share one size: with ``frame_shape: null`` they
    keep the size they were stored at, which can differ from video to video."""
    sizes = {}  # (H, W) -> the first video seen at that size
    for item in items:
        for key in ("source", "driving") if isinstance(item, dict) else ():
            if key in item:
                sizes.setdefault(tuple(np.shape(item[key])[-2:]), item.get("name", "?"))  # (H, W) of (C, H, W)
    if len(sizes) > 1:
        found = ", ".join(f"{name} is {h}x{w}" for (h, w), name in sizes.items())
        raise TrainingError(f"one batch holds frames of different sizes ({found}); with dataset_params.frame_shape: "
                            f"null every video must be stored at the same size: resize them, or set frame_shape")
    return default_collate(items)


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
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, collate_fn=collate_pairs,
                        num_workers=usable_workers(params["dataloader_workers"], section), drop_last=True,
                        pin_memory=device.type == "cuda", generator=generator, worker_init_fn=_ignore_stop_signals)
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


# The dataset's own errors, which say what is wrong with the data; anything else from the loader is a bug.
DATA_ERRORS = (VideoReadError, TrainingError, OSError)


def stop_workers(batches):
    """End the data workers of a loader's iterator now, however the epoch ended. They ignore SIGTERM (see
    _ignore_stop_signals), so workers kept alive by an exception's traceback would hold up the interpreter's exit,
    which terminates and then joins its child processes; torch's iterator shuts them down cleanly."""
    shutdown = getattr(batches, "_shutdown_workers", None)  # absent with no workers
    if shutdown is not None:
        shutdown()


def data_error_message(error):
    """The message of a dataset error, without the traceback a data worker's error carries when the loader
    raises it again in the main process ('Caught X in DataLoader worker process 0. Original Traceback ...')."""
    text = str(error)
    marker = f"{type(error).__name__}: "
    if "Original Traceback" in text and marker in text:
        return text.rsplit(marker, 1)[1].strip()
    return text


# --------------------------------------------------------------------------------------------------------------
# Mixed precision


class MixedPrecision:
    """Autocast and a grad scaler on CUDA for ``mode`` 'bf16' or 'fp16' (scaled); autocast to bf16 on CPUs that
    have it natively (2 puppets epochs: the losses of float32 within their seed-to-seed spread, steps 1.66x
    faster on a 2-core AMD EPYC); plain float32 otherwise."""

    def __init__(self, mode, device):
        self.device_type = device.type
        self.enabled = (device.type == "cuda" and mode != "none") or (device.type == "cpu" and mode == "bf16"
                                                                      and has_native_bf16())
        self.dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(mode, torch.float32)
        scaled = self.enabled and mode == "fp16"
        self.scaler = (torch.amp.GradScaler("cuda", enabled=scaled) if hasattr(torch.amp, "GradScaler")
                       else torch.cuda.amp.GradScaler(enabled=scaled))  # torch < 2.3
        if mode != "none" and not self.enabled and rank_and_world()[0] == 0:
            print(f"mixed_precision: {mode} applies on CUDA, and bf16 on CPUs with native bfloat16; training in "
                  f"float32 on {device}")

    def autocast(self):
        return torch.autocast(device_type=self.device_type, dtype=self.dtype, enabled=self.enabled)

    def backward(self, loss, optimizer):
        optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()

    def step(self, optimizer):
        self.scaler.step(optimizer)
        self.scaler.update()

    def backward_and_step(self, loss, optimizer):
        self.backward(loss, optimizer)
        self.step(optimizer)


# --------------------------------------------------------------------------------------------------------------
# The stage: what it is, where it stands, its one save and its one resume


def adam(parameters, lr, device):
    """Adam with the paper's betas (0.5, 0.999); its fused kernel, one pass over each tensor, where torch has it
    for ``device`` (CUDA; CPUs from torch 2.4): the same update up to float rounding."""
    version = tuple(int(part) for part in torch.__version__.split(".")[:2] if part.isdigit())
    fused = device.type == "cuda" or (device.type == "cpu" and version >= (2, 4))
    return torch.optim.Adam(parameters, lr=lr, betas=(0.5, 0.999), **({"fused": True} if fused else {}))


class Schedule(NamedTuple):
    """The published step schedule: ``lr`` divided by 10 at each milestone epoch passed (torch's MultiStepLR with
    gamma 0.1), computed from the epoch alone so that a resumed run needs no scheduler state."""
    lr: float
    milestones: tuple  # sorted epochs

    @classmethod
    def of(cls, params):
        """The schedule of a config section (``train_params`` / ``train_avd_params``)."""
        return cls(params["lr"], tuple(sorted(params["epoch_milestones"])))

    def rate(self, epoch):
        return self.lr * GAMMA ** bisect.bisect_right(self.milestones, epoch)

    def state(self, next_epoch):
        """What a checkpoint keeps of it (``scheduler_<stage>``), read back only to note a changed schedule."""
        return {"base_lr": self.lr, "milestones": list(self.milestones), "gamma": GAMMA, "last_epoch": next_epoch}


@dataclass(eq=False)
class Stage:
    """One training stage, as the epoch loop and its checkpoints see it.

    Attributes:
        name: 'reconstruction' or 'avd'. It names the checkpoint's entries (``optimizer_<name>``, ``epoch_<name>``,
            ``scheduler_<name>``, ``scaler_<name>``) and files (``<epoch>-cpk-<name>.pth``).
        networks: every network its checkpoints hold, by published name, frozen ones included.
        optimizer, schedule, mixed: what steps the trained networks, and at which rate.
        device: where the networks are.
        extra: entries stored as they are in every checkpoint (the config, the first stage's carried entries).
        forward: batch -> (losses, outputs), ``losses`` a dict of scalar tensors summed into the training loss;
            set once the model is built (after :func:`resume`, which may find nothing left to train).
        picture: :class:`EpochResult` -> the epoch's uint8 (H, W, 3) picture.
        first_epoch, last_checkpoint: where the stage stands; set by :func:`resume`, moved on by
            :func:`train_epochs`.
    """
    name: str
    networks: dict
    optimizer: torch.optim.Optimizer
    schedule: Schedule
    mixed: MixedPrecision
    device: torch.device
    extra: dict = field(default_factory=dict)
    forward: Optional[Callable] = None
    picture: Optional[Callable] = None
    first_epoch: int = 0
    last_checkpoint: Optional[Path] = None

    @property
    def tag(self):
        """Ends the pictures' names: ``train-vis/<epoch>-rec.png``, ``train-vis/<epoch>-avd.png``."""
        return "rec" if self.name == "reconstruction" else self.name

    @property
    def desc(self):
        return "epoch" if self.name == "reconstruction" else f"{self.name} epoch"


def check_params(params, section, config_name):
    """Refuse, before anything trains, values the loop cannot run with (config.py checks them too; this guards
    callers that pass a config dict of their own)."""
    for key, low in (("num_epochs", 1), ("num_repeats", 1), ("batch_size", 1), ("checkpoint_freq", 1),
                     ("dataloader_workers", 0)):
        if not isinstance(params[key], int) or params[key] < low:
            raise ConfigError(f"{config_name}: {section}.{key} is {params[key]!r}; expected an integer of {low} "
                              f"or more")


def checkpoint_name(epoch, stage, interrupted=False):
    """``00000012-cpk-reconstruction.pth``; an interrupted epoch's file is ``...-interrupted-cpk-<stage>.pth``."""
    return f"{epoch:08d}-{'interrupted-' if interrupted else ''}cpk-{stage}.pth"


def save_stage(stage, log_dir, epoch, interrupted_at=None):
    """Write the stage's checkpoint for ``epoch`` into ``log_dir`` (the interrupted epoch's file when
    ``interrupted_at`` is given); returns its path. Resuming from it trains the epoch after the last one finished."""
    name, interrupted = stage.name, interrupted_at is not None
    entries = {f"epoch_{name}": epoch - 1 if interrupted else epoch}  # the last epoch trained to its end
    entries[f"scheduler_{name}"] = stage.schedule.state(entries[f"epoch_{name}"] + 1)
    if stage.mixed.scaler.is_enabled():
        entries[f"scaler_{name}"] = stage.mixed.scaler.state_dict()
    if interrupted:
        entries["interrupted_at"] = interrupted_at
    path = Path(log_dir) / checkpoint_name(epoch, name, interrupted)
    return save_checkpoint(path, stage.networks, {f"optimizer_{name}": stage.optimizer}, **stage.extra, **entries)


def resume(stage, checkpoint_path, config_name, optional=()):
    """Load a checkpoint into the stage's networks, optimizer and grad scaler; returns the checkpoint dict.

    The stage then starts at the epoch after the file's ``epoch_<name>`` (0 when it has none, e.g. a first-stage
    checkpoint for the AVD stage). The learning rate takes nothing from the file: :func:`train_epochs` sets the
    config's rate every epoch, so a run resumed with a longer schedule follows it (with a note naming the old one).
    Networks named in ``optional`` keep their weights when the file lacks them.
    """
    name = stage.name
    checkpoint = load_checkpoint(checkpoint_path, stage.networks, {f"optimizer_{name}": stage.optimizer},
                                 config_name=config_name, map_location=stage.device, optional=optional)
    stage.first_epoch = checkpoint[f"epoch_{name}"] + 1 if f"epoch_{name}" in checkpoint else 0
    stage.last_checkpoint = checkpoint_path
    if f"scaler_{name}" in checkpoint:
        stage.mixed.scaler.load_state_dict(checkpoint[f"scaler_{name}"])
    saved = checkpoint.get(f"scheduler_{name}", {}).get("milestones")  # a list, or torch's Counter in older files
    if saved is not None and sorted(Counter(saved).elements()) != list(stage.schedule.milestones) \
            and rank_and_world()[0] == 0:
        print(f"note: {checkpoint_path} was trained with epoch_milestones {sorted(Counter(saved).elements())}; "
              f"continuing with the config's {list(stage.schedule.milestones)}")
    return checkpoint


def nothing_to_train(stage, params, section):
    """Whether the stage's checkpoint already holds ``num_epochs`` epochs; rank 0 says so."""
    if stage.first_epoch < params["num_epochs"]:
        return False
    if rank_and_world()[0] == 0:
        print(f"{stage.last_checkpoint} has finished {stage.desc} {stage.first_epoch - 1}, and {section}.num_epochs "
              f"is {params['num_epochs']}: nothing to train (raise num_epochs to train on)")
    return True


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


def run_epoch(stage, loader, logger, stop, epoch):
    """One pass over ``loader``: load a batch, forward, backward, check the losses, step, log.

    The numbers are checked before the step (see :func:`check_finite`); a stop requested on any process ends the
    pass after its step, with ``interrupted_at`` set. The backward pass is queued before the host reads the losses
    (the one read of device values in a step, :func:`summarise_step`), so that a GPU is not left idle while the host
    launches it: nothing else in the step waits for the device (tests/test_train.py runs it on the meta device).
    """
    started = time.time()
    batches = iter(loader)
    bar = tqdm(total=len(loader), desc=f"{stage.desc} {epoch}", disable=rank_and_world()[0] != 0,
               dynamic_ncols=True, leave=False)
    interrupted_at, batch, out, unreadable = None, None, None, None
    try:
        for iteration in itertools.count():
            try:
                batch = next(batches)
            except StopIteration:
                break
            except DATA_ERRORS as error:
                unreadable = data_error_message(error)  # raised below, without the loader's frames attached
                break
            except RuntimeError:  # a SIGTERM to the process group can kill the data workers before our own check
                if not stop.requested:
                    raise
                interrupted_at = {"epoch": epoch, "iteration": iteration - 1}  # the last step taken
                break
            try:
                losses, out = stage.forward(batch)
                stage.mixed.backward(sum(losses.values()), stage.optimizer)
            except torch.linalg.LinAlgError as e:  # e.g. the SVD of region covariances gone NaN
                raise diverged(epoch, iteration, stage.last_checkpoint, f"the forward pass failed ({e})") from None
            values, stopping = summarise_step(losses, stop.requested, stage.device)
            check_finite(values, epoch, iteration, stage.last_checkpoint)
            stage.mixed.step(stage.optimizer)
            logger.log_iter(values)
            bar.update()
            bar.set_postfix({k: f"{v:.4g}" for k, v in values.items()}, refresh=False)
            if stopping:
                interrupted_at = {"epoch": epoch, "iteration": iteration}
                break
    finally:
        bar.close()
        stop_workers(batches)
    if unreadable is not None:
        raise TrainingError(unreadable)
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


# --------------------------------------------------------------------------------------------------------------
# The epoch loop


def train_epochs(stage, loader, logger, params, *, log_dir, seed=0):
    """Train ``stage`` from its ``first_epoch`` to ``params['num_epochs']``: each epoch set the schedule's rate,
    run the epoch, log, draw, and write a checkpoint every ``checkpoint_freq`` epochs and at the last.

    A Ctrl-C or SIGTERM ends the current step, writes a checkpoint and raises TrainingInterrupted. Temporary files
    that an earlier, killed run left in ``log_dir`` mid-write are removed first. Returns the path of the last
    checkpoint written (or resumed from).
    """
    main = logger.enabled
    if main:
        for path in remove_stale_temporaries(log_dir):
            print(f"note: removed {path}, left by a checkpoint write that was killed")
    with GracefulStop() as stop:
        for epoch in range(stage.first_epoch, params["num_epochs"]):
            lr = stage.schedule.rate(epoch)
            for group in stage.optimizer.param_groups:
                group["lr"] = lr
            start_epoch(loader, seed, epoch)
            result = run_epoch(stage, loader, logger, stop, epoch)
            if result.interrupted_at is not None:
                path = save_stage(stage, log_dir, epoch, result.interrupted_at) if main else None
                raise TrainingInterrupted(stop.requested or "SIGTERM", path)
            means = logger.log_epoch(epoch, lr=lr, seconds=result.seconds)
            if main:
                print(format_losses(epoch, means))
                logger.save_image(f"{epoch:08d}-{stage.tag}.png", stage.picture(result))
                if (epoch + 1) % params["checkpoint_freq"] == 0 or epoch + 1 == params["num_epochs"]:
                    stage.last_checkpoint = save_stage(stage, log_dir, epoch)
            barrier()
    return stage.last_checkpoint
