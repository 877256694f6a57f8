"""The one training loop of the recipes: epochs, optimiser steps, logging, checkpoints, resume.

A recipe describes *what* one step computes (a :class:`JobBase`); :func:`run_loop` owns everything
around it, the same for pretraining and downstream training:

* the step counters (:class:`Counters`: optimiser steps done, epoch, steps into the epoch), which
  the checkpoint stores, so a resumed run continues where the interrupted one stopped;
* the optimiser step: ``zero_grad``, the non-finite check (:func:`check_finite`), the (scaled)
  backward, ``optim.grad_clip``, the optimiser and grad-scaler steps, the scheduler step;
* scalars: ``loss/<term>`` for every term, ``loss/total``, ``lr``, ``throughput`` (samples/s),
  ``epoch`` and whatever the job adds, logged every ``run.log_every`` steps and at step 1;
* ``last.pt`` every ``run.checkpoint_every`` steps and at every epoch end, the progress bar and
  the step callbacks;
* a stop signal (SIGTERM, SIGINT, SIGUSR1; :mod:`olivine_train.preemption`): after the step in
  progress, ``last.pt``, a ``preempted`` record and :class:`~olivine_train.preemption.Preempted`;
* around the loop: :func:`open_run` (runtime, the run folder's lock, the stop signals, the
  resume's config check, ``config.yaml``, logger, clean-up) and :func:`resume_if_asked`
  (``run.resume``, dropping the log records after the checkpoint, recording accepted changes).
"""

from __future__ import annotations

import abc
import contextlib
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, TypeVar

import torch
from torch import nn

from olivine_data.progress import progress_bar
from olivine_train.checkpoint import (
    CHECKPOINT_FORMAT,
    TERMS_STATE_KEY,
    Checkpoint,
    Payload,
    atomic_save,
    load_checkpoint,
    load_strict,
)
from olivine_train.config import Config, check_resume_config, config_to_dict, save_config
from olivine_train.distributed import barrier, cleanup
from olivine_train.logging import RunLogger
from olivine_train.preemption import Preempted, requested_stop, stop_signals
from olivine_train.recipes.common import (
    ParamGroup,
    Runtime,
    StepCallback,
    build_optimizer,
    build_scheduler,
    check_finite,
    keep_configured_hyperparameters,
    make_runtime,
)
from olivine_train.runfolder import check_existing_run, remove_if_unused
from olivine_train.runlock import RunLock

__all__ = [
    "Counters",
    "JobBase",
    "StepOutput",
    "open_run",
    "resume_if_asked",
    "run_loop",
]

BatchT = TypeVar("BatchT")


@dataclass
class Counters:
    """Where a run is: optimiser steps done, the epoch, steps done in that epoch."""

    step: int = 0
    epoch: int = 0
    step_in_epoch: int = 0


@dataclass
class StepOutput:
    """What a job's :meth:`JobBase.compute` returns for one batch: the loss to minimise, its
    named terms (logged as ``loss/<name>`` and checked for NaN/inf), the samples in the batch and
    extra scalars to log.
    """

    total: torch.Tensor
    terms: dict[str, torch.Tensor]
    batch_size: int
    scalars: dict[str, float] = field(default_factory=dict)


class JobBase(abc.ABC, Generic[BatchT]):
    """The one contract between a recipe and :func:`run_loop`, and what the recipes' jobs share:
    the optimiser set-up, the checkpoint payload and its restore, writing it, default hooks.

    A recipe subclasses it with its batch type (``JobBase[PretrainBatch]``) and provides the
    data hooks (:meth:`start_epoch`, :meth:`batches`), the step (:meth:`compute`), the
    checkpoint (:meth:`state`, :meth:`resume`) and, if it needs them, :meth:`after_step` and
    :meth:`end_epoch`.
    """

    cfg: Config
    rt: Runtime
    counters: Counters
    total_steps: int
    steps_per_epoch: int
    net: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler

    @abc.abstractmethod
    def start_epoch(self) -> None:
        """Prepare the data of epoch ``counters.epoch`` from step ``counters.step_in_epoch``."""

    @abc.abstractmethod
    def batches(self) -> Iterable[BatchT]:
        """This epoch's remaining batches."""

    @abc.abstractmethod
    def compute(self, batch: BatchT) -> StepOutput:
        """Forward pass and loss of step ``counters.step + 1`` (train mode is the job's)."""

    def end_epoch(self, epoch_done: bool, finished: bool) -> None:
        """Called at the end of each pass over :meth:`batches`, before ``last.pt`` is saved."""

    def build_optimisation(self, groups: list[ParamGroup]) -> None:
        """SGD over ``groups`` (lr scaled by the batch when asked), its schedule over the run's
        steps, and the grad scaler.
        """
        o = self.cfg.optim
        self.optimizer = build_optimizer(groups, o, self.cfg.data.batch_size)
        self.scheduler = build_scheduler(self.optimizer, self.total_steps, o.scheduler)
        self.scaler = self.rt.grad_scaler()

    def checkpoint(
        self,
        kind: str,
        *,
        best_metric: float | None,
        terms_state: dict[str, torch.Tensor] | None,
        rng: Payload,
    ) -> Checkpoint:
        """The checkpoint payload shared by the recipes (``last.pt``): model, optimiser,
        scheduler, scaler, counters, config, plus the recipe's best metric, its loss terms' state
        (pretraining) and RNGs.
        """
        c = self.counters
        return {
            "format": CHECKPOINT_FORMAT,
            "kind": kind,
            "model_name": self.cfg.model.point_encoder,
            "config": config_to_dict(self.cfg),
            "model": {k: v.detach().cpu() for k, v in self.net.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
            TERMS_STATE_KEY: terms_state,
            "step": c.step,
            "epoch": c.epoch,
            "step_in_epoch": c.step_in_epoch,
            "best_metric": best_metric,
            "rng": rng,
        }

    def restore(self, ckpt: Checkpoint, path: str) -> None:
        """Model, optimiser, scheduler, scaler and the loop counters from a loaded checkpoint.
        The recipe restores what is its own (vMF prior, RNG, best metric).
        """
        load_strict(self.net, ckpt["model"], f"{path}: model")
        configured = [
            {k: v for k, v in g.items() if k != "params"} for g in self.optimizer.param_groups
        ]
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        keep_configured_hyperparameters(self.optimizer, self.scheduler, configured)
        if ckpt.get("scaler") is not None:
            self.scaler.load_state_dict(ckpt["scaler"])
        self.counters.step = int(ckpt["step"])
        self.counters.epoch = int(ckpt["epoch"])
        self.counters.step_in_epoch = int(ckpt["step_in_epoch"])

    @abc.abstractmethod
    def state(self) -> Checkpoint:
        """The checkpoint payload (the recipe's :meth:`checkpoint` with its extras)."""

    @abc.abstractmethod
    def resume(self, path: str) -> None:
        """Restore the run from the checkpoint at ``path``."""

    def save(self, name: str = "last.pt") -> None:
        """Write :meth:`state` atomically to ``<run dir>/<name>`` (rank 0 only)."""
        if self.rt.is_main:
            atomic_save(self.state(), self.rt.run_dir / name)

    def after_step(self, out: StepOutput) -> dict[str, float]:
        """Called after the optimiser step (``counters.step`` counts it); extra scalars."""
        return {}


def _resume_path(cfg: Config) -> Path | None:
    """``run.resume`` resolved: ``auto`` is ``<run dir>/last.pt`` when it exists, else None."""
    resume = cfg.run.resume
    if resume == "auto":
        last = cfg.run_dir / "last.pt"
        return last if last.is_file() else None
    return Path(resume) if resume is not None else None


@contextlib.contextmanager
def open_run(cfg: Config, recipe: str) -> Iterator[tuple[Runtime, RunLogger]]:
    """The runtime and logger of a run of ``recipe``.

    In this order:

    1. the runtime (process group, device, seeds, the run folder);
    2. rank 0 takes the run folder's exclusive lock (:class:`~olivine_train.runlock.RunLock`;
       a second run into the folder fails, exit code 6), held until the block ends;
    3. SIGTERM / SIGINT / SIGUSR1 are recorded instead of killing the process
       (:func:`~olivine_train.preemption.stop_signals`; :func:`run_loop` acts on them);
    4. a resume compares the config with the checkpoint's (refusing result-changing
       differences not named in ``run.allow_changes``);
    5. ``config.yaml`` is written for a new run and kept as it is on resume (accepted changes
       go to ``config.resume-<step>.yaml``, written by :func:`resume_if_asked`);
    6. the logger.

    Closes the logger, releases the lock and the process group on any exit.
    """
    if cfg.recipe != recipe:
        raise ValueError(f"recipe: expected {recipe!r}, got {cfg.recipe!r}")
    created = not cfg.run_dir.exists()
    rt = make_runtime(cfg)
    try:
        with contextlib.ExitStack() as stack:
            stack.callback(cleanup)
            lock = stack.enter_context(RunLock(rt.run_dir)) if rt.is_main else None
            stack.enter_context(stop_signals())
            rt.resume_from = _resume_path(cfg)
            _protect_existing_run(rt, cfg, lock, stack)
            if rt.resume_from is not None:
                # mmap: the tensors are not read, only the stored config is needed here
                stored = load_checkpoint(rt.resume_from, expect_kind=recipe, mmap=True)["config"]
                rt.resume_changes = tuple(check_resume_config(stored, cfg, str(rt.resume_from)))
            original = rt.run_dir / "config.yaml"
            if rt.is_main and (rt.resume_from is None or not original.is_file()):
                save_config(cfg, original)
            logger = RunLogger(rt.run_dir, enabled=rt.is_main)
            stack.callback(logger.close)
            if rt.resume_from is None and logger.has_records():
                logger.resume_at(-1)  # records of an earlier run that left no checkpoint
            yield rt, logger
    except BaseException:
        if created and rt.is_main:  # a run that never started leaves no folder behind
            remove_if_unused(rt.run_dir)
        raise


def _protect_existing_run(
    rt: Runtime, cfg: Config, lock: RunLock | None, stack: contextlib.ExitStack
) -> None:
    """A new run into a folder holding ``last.pt``: refused, or (``run.overwrite``) the old run
    is moved aside by rank 0, which then locks the new, empty folder (see
    :mod:`olivine_train.runfolder`).
    """
    auto = cfg.run.resume == "auto"
    if not rt.is_main and (cfg.run.overwrite or auto):  # rank 0 moves what is moved
        return
    aside = check_existing_run(rt.run_dir, rt.resume_from is not None, cfg.run.overwrite, auto)
    if aside is None:
        return
    if aside.parent == rt.run_dir:  # run.resume=auto without a checkpoint: only the log moved
        print(f"[olivine-train] no last.pt to resume from: the earlier log was kept as {aside}")
        return
    stack.enter_context(RunLock(rt.run_dir))
    if lock is not None:
        lock.release()  # the old folder's lock, which moved with it
    print(f"[olivine-train] run.overwrite=true: the previous run was moved aside to {aside}")


def resume_if_asked(job: JobBase[BatchT], logger: RunLogger) -> str | None:
    """Resume ``job`` from ``run.resume`` (``auto``: ``<run dir>/last.pt`` when it exists, as
    resolved by :func:`open_run`), drop the log records after the checkpoint's step and record
    the config changes the resume was allowed (a ``resume_changes`` record in
    ``metrics.jsonl``); returns the checkpoint used, if any.
    """
    path = job.rt.resume_from
    if path is None:
        return None
    job.resume(str(path))
    step = job.counters.step
    logger.resume_at(step)
    if job.rt.resume_changes:
        if job.rt.is_main:
            save_config(job.cfg, job.rt.run_dir / f"config.resume-{step}.yaml")
        logger.event(
            step,
            "resume_changes",
            {
                "checkpoint": str(path),
                "config": f"config.resume-{step}.yaml",
                "changes": {c.field: [c.stored, c.new] for c in job.rt.resume_changes},
            },
        )
        if job.rt.is_main:
            listed = "; ".join(c.describe() for c in job.rt.resume_changes)
            print(f"[olivine-train] resuming at step {step} with allowed changes: {listed}")
    return str(path)


def _stop_if_asked(job: JobBase[BatchT], logger: RunLogger) -> None:
    """After a stop signal (on any rank): write ``last.pt``, log it, raise :class:`Preempted`."""
    name = requested_stop(job.rt.dist.distributed, job.rt.device)
    if name is None:
        return
    job.save("last.pt")
    path = job.rt.run_dir / "last.pt"
    logger.event(job.counters.step, "preempted", {"signal": name, "checkpoint": str(path)})
    logger.flush()
    barrier()  # no rank leaves (and makes torchrun stop the others) before last.pt is written
    raise Preempted(name, job.counters.step, path)


def _optimise(job: JobBase[BatchT], out: StepOutput) -> float:
    """Backward and optimiser step; returns the lr the step used (last parameter group)."""
    cfg, rt = job.cfg, job.rt
    check_finite(job.counters.step + 1, {"total": out.total, **out.terms}, rt.run_dir)
    job.scaler.scale(out.total).backward()
    if cfg.optim.grad_clip is not None:
        job.scaler.unscale_(job.optimizer)
        nn.utils.clip_grad_norm_(job.net.parameters(), cfg.optim.grad_clip)
    job.scaler.step(job.optimizer)
    job.scaler.update()
    lr = float(job.optimizer.param_groups[-1]["lr"])
    job.scheduler.step()
    return lr


def run_loop(
    job: JobBase[BatchT], logger: RunLogger, callbacks: list[StepCallback], desc: str
) -> dict[str, float]:
    """Train ``job`` until ``job.total_steps``; returns the last step's scalars."""
    cfg, c = job.cfg, job.counters
    last: dict[str, float] = {}
    bar = progress_bar(
        enabled=job.rt.is_main and cfg.run.progress,
        total=job.total_steps,
        initial=c.step,
        desc=desc,
        unit="step",
    )
    try:
        while c.step < job.total_steps:
            _stop_if_asked(job, logger)  # a signal before the first step or at an epoch's end
            job.start_epoch()
            t_last = time.perf_counter()
            for batch in job.batches():
                job.optimizer.zero_grad(set_to_none=True)
                out = job.compute(batch)
                lr = _optimise(job, out)
                c.step += 1
                c.step_in_epoch += 1
                now = time.perf_counter()
                scalars = {f"loss/{k}": float(v.detach()) for k, v in out.terms.items()}
                scalars["loss/total"] = float(out.total.detach())
                scalars["lr"] = lr
                scalars["throughput"] = out.batch_size / max(now - t_last, 1e-9)
                scalars["epoch"] = float(c.epoch)
                scalars.update(out.scalars)
                scalars.update(job.after_step(out))
                t_last = now
                last = scalars
                if c.step % cfg.run.log_every == 0 or c.step == 1:
                    logger.scalars(c.step, scalars)
                bar.set_postfix(loss=f"{scalars['loss/total']:.4f}", refresh=False)
                bar.update(1)
                if cfg.run.checkpoint_every and c.step % cfg.run.checkpoint_every == 0:
                    job.save("last.pt")
                for cb in callbacks:
                    cb(c.step, scalars)
                if c.step >= job.total_steps:
                    break  # a signal now lets the run finish: only the epoch's end is left
                _stop_if_asked(job, logger)
            epoch_done = c.step_in_epoch >= job.steps_per_epoch
            if epoch_done:
                c.epoch += 1
                c.step_in_epoch = 0
            job.end_epoch(epoch_done, c.step >= job.total_steps)
            job.save("last.pt")
    finally:
        bar.close()
    return last
