"""The training loop: epochs of micro-batches -> engine updates, logging, cv, checkpoints.

The loop is engine-agnostic (see engines.py). Ranks stay in lock-step: before
each micro-batch every rank says whether it still has data, and the epoch ends
for all as soon as one runs dry, so no rank waits forever in a collective and
no rank repeats data (the dataset splits its lists across ranks x workers).

Progress is counted in optimizer updates (`step`). A checkpoint records step,
epoch, `batch_idx` (micro-batches this rank consumed in the epoch) and
`data_position` (per rank, micro-batches consumed from each DataLoader worker).
Resume seeks: each worker reads and batches its first batches again without
computing their features (data/dataset.py skip_batches: SkippedBatch markers
in the same loader order) and the loop drops them, so training continues from
the exact data position in the time it takes to read the lists; audio lengths and
token counts the interrupted run recorded (data/data_index.py, bin/train.py
--data_index) spare decoding and tokenizing what is passed over. Without a
data_position (older checkpoints) or where features cannot be deferred, the
batches are replayed through the whole pipeline instead. Every rank's global RNG state
(python, numpy, torch, accelerator) is saved beside it (TAG.rng.pt) and
restored on resume, so dropout masks go on as in an uninterrupted run.
"""
from __future__ import annotations

import datetime
import math
import os
import sys
import time
from collections import defaultdict
from dataclasses import asdict, dataclass

import torch
import torch.distributed as dist

from osum_echat.data.batch import SkippedBatch
from osum_echat.train import checkpointing as ckpt_io
from osum_echat.train import devices
from osum_echat.train.engines import rank, world_size
from osum_echat.utils import get_logger

logger = get_logger(__name__)


class TooManyNaNs(RuntimeError):
    """Loss stayed NaN/Inf for too many micro-batches in a row."""


class NoTrainingData(RuntimeError):
    """An epoch yielded no batch at all."""


@dataclass
class TrainState:
    step: int = 0          # optimizer updates done
    epoch: int = 0         # epoch in progress
    batch_idx: int = 0     # micro-batches of this epoch consumed (per rank)
    nan_batches: int = 0   # micro-batches whose loss was not finite (whole run)
    skipped_updates: int = 0


def comm_device() -> torch.device:
    return devices.comm_device(dist.get_backend())


def all_ranks(flag: bool) -> bool:
    """True if `flag` holds on every rank (logical AND across the job)."""
    if world_size() == 1:
        return flag
    t = torch.tensor([1 if flag else 0], dtype=torch.int32, device=comm_device())
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item())


def sum_across_ranks(values: list[float]) -> list[float]:
    if world_size() == 1:
        return values
    # float64 for exact sums on CPU; accelerators reduce float32 (not every one has float64)
    device = comm_device()
    t = torch.tensor(values, dtype=torch.float64 if device.type == "cpu" else torch.float32,
                     device=device)
    dist.all_reduce(t)
    return t.tolist()


class Meter:
    """Token-weighted loss and accuracy per output_type, plus throughput counters."""

    def __init__(self):
        self.reset()

    def reset(self):
        self.sums = defaultdict(lambda: [0.0, 0.0, 0.0])  # loss*n, acc*n, n
        self.samples = 0
        self.nonfinite = 0  # batches whose loss was NaN/Inf (left out of the averages)
        self.start = time.monotonic()

    def add(self, out: dict, num_samples: int):
        n = float(out.get("num_tokens", 1))
        loss = float(out["loss"].detach())
        if not math.isfinite(loss):
            self.nonfinite += 1
            return
        acc = out.get("acc")
        acc = float(acc) if acc is not None else 0.0
        s = self.sums[out.get("output_type", "all")]
        s[0] += loss * n
        s[1] += acc * n
        s[2] += n
        self.samples += num_samples

    def summary(self, reduce: bool = True) -> dict:
        """{'loss', 'acc', 'loss/<type>', 'acc/<type>', 'tokens_per_s', 'samples_per_s'}."""
        kinds = sorted(self.sums)
        if reduce and world_size() > 1:
            # every rank must contribute the same kinds, in the same order
            kinds = gather_kinds(kinds)
        flat = [v for k in kinds for v in (self.sums[k] if k in self.sums else [0.0, 0.0, 0.0])]
        flat = sum_across_ranks(flat + [float(self.samples)]) if reduce else flat + [float(self.samples)]
        out, total = {}, [0.0, 0.0, 0.0]
        for i, k in enumerate(kinds):
            loss_n, acc_n, n = flat[3 * i:3 * i + 3]
            if n > 0:
                out[f"loss/{k}"], out[f"acc/{k}"] = loss_n / n, acc_n / n
                total = [total[0] + loss_n, total[1] + acc_n, total[2] + n]
        if total[2] > 0:
            out["loss"], out["acc"] = total[0] / total[2], total[1] / total[2]
        elapsed = max(time.monotonic() - self.start, 1e-9)
        out["tokens_per_s"] = total[2] / elapsed
        out["samples_per_s"] = flat[-1] / elapsed
        return out


def gather_objects(obj) -> list:
    """[obj of rank 0, obj of rank 1, ...] on every rank."""
    if world_size() == 1:
        return [obj]
    gathered = [None] * world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def gather_kinds(kinds: list[str]) -> list[str]:
    gathered = [None] * world_size()
    dist.all_gather_object(gathered, kinds)
    return sorted({k for ks in gathered for k in ks})


def format_metrics(m: dict) -> str:
    parts = [f"loss {m['loss']:.4f}" if "loss" in m else "loss n/a"]
    for key in sorted(k for k in m if k.startswith("loss/")):
        kind = key.split("/", 1)[1]
        parts.append(f"[{kind}] loss {m[key]:.4f} acc {m['acc/' + kind]:.3f}")
    return " ".join(parts)


class Trainer:
    def __init__(self, engine, train_dataset, train_loader, cv_loader, config: dict,
                 model_dir: str, writer=None, save_states: bool = True):
        self.engine = engine
        self.train_dataset = train_dataset
        self.train_loader = train_loader
        self.cv_loader = cv_loader
        self.config = config
        self.model_dir = model_dir
        self.writer = writer
        self.save_states = save_states
        train_conf = config.get("train_conf", {}) or {}
        self.log_interval = max(1, int(config.get("log_interval", 10)))
        self.save_interval = int(config.get("save_interval", 0) or 0)
        self.max_epoch = int(config.get("max_epoch", 1))
        self.max_steps = int(config.get("max_steps", 0) or 0)
        self.keep = int(config.get("keep_checkpoint_max", 5))
        self.max_nan = int(train_conf.get("max_consecutive_nan", 20))
        self.cv_at_start = bool(train_conf.get("cv_at_start", True))
        self.state = TrainState()
        self._consecutive_nan = 0
        self._pending_rng = None  # RNG state to restore once the resumed epoch is positioned
        self._worker_batches = defaultdict(int)  # this epoch's micro-batches per loader worker (this rank)
        self._seek = None  # resumed data_position of this rank: {worker: batches}
        self._steps_per_epoch = None  # known once an epoch ran whole: the total then follows
        os.makedirs(model_dir, exist_ok=True)

    # -- resume ------------------------------------------------------------
    def resume(self) -> bool:
        """Continue from the newest complete checkpoint in model_dir, if there is one."""
        if rank() == 0:
            ckpt_io.clean_debris(self.model_dir)
        ckpt = ckpt_io.latest_checkpoint(self.model_dir)
        if ckpt is None:
            return False
        full = self.engine.load(ckpt)
        info = ckpt["info"]
        self.state = TrainState(step=int(info["step"]), epoch=int(info.get("epoch", 0)),
                                batch_idx=int(info.get("batch_idx", 0)),
                                nan_batches=int(info.get("nan_batches", 0)),
                                skipped_updates=int(info.get("skipped_updates", 0)))
        if not full:
            logger.warning("%s has no optimizer state (save_states=model_only): optimizer restarts, "
                           "lr schedule jumps to step %d", ckpt["tag"], self.state.step)
            if hasattr(self.engine.scheduler, "set_step"):
                self.engine.scheduler.set_step(self.state.step)
        if int(info.get("world_size", world_size())) != world_size():
            logger.warning("%s was written by %s processes, now %d: the data position is "
                           "approximate", ckpt["tag"], info.get("world_size"), world_size())
        self._pending_rng = self._saved_rng(ckpt)
        position = info.get("data_position")
        if isinstance(position, list) and len(position) == world_size():
            self._seek = {int(w): int(n) for w, n in (position[rank()] or {}).items()}
        logger.info("resumed from %s: step %d, epoch %d, batch %d", ckpt["tag"],
                    self.state.step, self.state.epoch, self.state.batch_idx)
        return True

    def _saved_rng(self, ckpt: dict):
        """This rank's RNG state from the checkpoint (None, with a warning, when absent)."""
        if not os.path.exists(ckpt["rng"]):
            logger.warning("%s has no RNG state (written by an older version): dropout masks "
                           "after resume differ from an uninterrupted run", ckpt["tag"])
            return None
        ranks = torch.load(ckpt["rng"], map_location="cpu", weights_only=True)["ranks"]
        if len(ranks) != world_size():
            logger.warning("%s holds RNG state of %d ranks, now %d: not restored", ckpt["tag"],
                           len(ranks), world_size())
            return None
        return ranks[rank()]

    def _restore_rng(self) -> None:
        if self._pending_rng is not None:
            ckpt_io.set_rng_state(self._pending_rng)
            self._pending_rng = None

    def start_at_step(self, step: int) -> None:
        """Continue the step count (and lr schedule) of an initial checkpoint (init_step: false)."""
        self.state.step = step
        if hasattr(self.engine.scheduler, "set_step"):
            self.engine.scheduler.set_step(step)
        logger.info("init_step is false: counting on from step %d of the initial checkpoint", step)

    # -- main loop ---------------------------------------------------------
    def fit(self) -> TrainState:
        if self.cv_at_start and self.state.step == 0 and self.state.batch_idx == 0:
            self._cv_at_start()
        bar = self._progress()
        while self.state.epoch < self.max_epoch and not self._reached_max_steps():
            if self._train_epoch(bar):
                if not (self.save_interval and self.state.step % self.save_interval == 0):
                    self.save(f"step_{self.state.step}")  # so a later run can continue
                break
            self._end_epoch()
        if bar is not None:
            bar.close()
        self._write_final()
        return self.state

    def _reached_max_steps(self) -> bool:
        return bool(self.max_steps) and self.state.step >= self.max_steps

    def _train_epoch(self, bar) -> bool:
        """One epoch (or until max_steps); True when max_steps was reached."""
        st = self.state
        if hasattr(self.train_dataset, "set_epoch"):
            self.train_dataset.set_epoch(st.epoch)
        if st.batch_idx == 0:  # saved at an epoch end: before this epoch's loader started
            self._restore_rng()
        seek = self._seek if st.batch_idx else None
        self._seek = None
        if seek is not None and sum(seek.values()) != st.batch_idx:
            logger.warning("checkpoint data_position %s does not add up to batch_idx %d: replaying",
                           seek, st.batch_idx)
            seek = None
        skip_batches = getattr(self.train_dataset, "skip_batches", None)
        if seek is not None and (skip_batches is None or not skip_batches(seek)):
            seek = None
        self._worker_batches = defaultdict(int)
        batches = iter(self.train_loader)
        if st.batch_idx:  # resume: skip (seek) or replay this epoch's batches already trained on
            t0 = time.monotonic()
            for _ in range(st.batch_idx):
                item = next(batches, None)
                if item is None:
                    break
                if seek is not None and not isinstance(item, SkippedBatch):
                    raise RuntimeError(f"resume of epoch {st.epoch}: a real batch came where batch "
                                       f"{sum(self._worker_batches.values())} of {st.batch_idx} already "
                                       f"trained on was expected (data_position {seek}): the data order "
                                       "differs from the interrupted run")
                self._worker_batches[getattr(item, "worker", 0)] += 1
            logger.info("resume: %s %d batches of epoch %d in %.1fs", "skipped" if seek is not None
                        else "replayed", st.batch_idx, st.epoch, time.monotonic() - t0)
        self._restore_rng()  # saved mid-epoch: after the epoch's loader started, as here
        start_idx = st.batch_idx
        epoch_start_step = st.step
        meter = Meter()
        self.engine.model.train()
        while True:
            batch = next(batches, None)
            if not all_ranks(batch is not None):
                if st.batch_idx == 0 and start_idx == 0:
                    raise NoTrainingData(
                        f"epoch {st.epoch} gave no batch on some rank: the data lists are empty, "
                        f"too short for {world_size()} processes, or every sample was skipped "
                        f"(skips by reason: {self._skip_counts() or 'none counted'})")
                if start_idx == 0 and self._steps_per_epoch is None:  # a whole epoch: now the total is known
                    self._steps_per_epoch = st.step - epoch_start_step
                    if bar is not None:
                        bar.total = self._total_steps()
                return False
            if isinstance(batch, SkippedBatch):
                raise RuntimeError(f"epoch {st.epoch} batch {st.batch_idx}: the loader passed over a batch "
                                   "not trained on (resume data_position and data order disagree)")
            grad_norm = self._train_batch(batch, meter)
            st.batch_idx += 1
            self._worker_batches[getattr(batch, "worker", 0)] += 1
            if grad_norm is None:
                continue
            if not math.isfinite(grad_norm):
                st.skipped_updates += 1
                logger.warning("step %d: non-finite grad norm, update skipped (%d so far)",
                               st.step, st.skipped_updates)
                continue
            st.step += 1
            if bar is not None:
                bar.set(st.step)
            if st.step % self.log_interval == 0:
                self._log_train(meter, grad_norm, bar)
                meter.reset()
            if self.save_interval and st.step % self.save_interval == 0:
                self.save(f"step_{st.step}")
            if self._reached_max_steps():
                return True

    def _train_batch(self, batch, meter):
        batch = batch.to(self.engine.device)
        with self.engine.accumulating():
            out = self.engine.forward(batch)
            loss = out["loss"]
            finite = all_ranks(bool(torch.isfinite(loss.detach())))
            self._count_nan(finite)
            if not finite and not self.engine.drops_bad_updates:
                return None  # the engine cannot drop the update later: skip this micro-batch
            self.engine.backward(loss)
        meter.add(out, len(batch.keys))
        return self.engine.step()

    def _count_nan(self, finite: bool):
        if finite:
            self._consecutive_nan = 0
            return
        self.state.nan_batches += 1
        self._consecutive_nan += 1
        logger.warning("epoch %d batch %d: loss is NaN/Inf, its update is skipped "
                       "(%d non-finite batches so far)", self.state.epoch, self.state.batch_idx,
                       self.state.nan_batches)
        if self._consecutive_nan > self.max_nan:
            last = ckpt_io.latest_checkpoint(self.model_dir)
            raise TooManyNaNs(
                f"loss was NaN/Inf for {self._consecutive_nan} micro-batches in a row "
                f"(train_conf.max_consecutive_nan={self.max_nan}); stopping. The last good "
                f"checkpoint is {last['model'] if last else 'none (nothing saved yet)'}. "
                "Lower optim_conf.lr, check the data, or resume from that checkpoint.")

    def _skip_counts(self) -> dict:
        counts = getattr(self.train_dataset, "skip_counts", None)
        return {k: v for k, v in counts().items() if v} if counts else {}

    def _end_epoch(self):
        st = self.state
        skips = self._skip_counts()
        if skips and rank() == 0:
            logger.info("after epoch %d: samples skipped so far (all epochs), by reason: %s", st.epoch, skips)
            for reason, n in skips.items():
                self.writer and self.writer.add_scalar(f"data/skipped_{reason}", n, st.step)
        dropped = self.engine.drop_partial_accumulation()
        if dropped:
            logger.info("epoch %d ended %d micro-batch(es) into an accumulation: dropped", st.epoch, dropped)
        tag = f"epoch_{st.epoch}"
        st.epoch += 1
        st.batch_idx = 0
        self.save(tag, epoch_done=True)

    # -- evaluation ----------------------------------------------------------
    @torch.no_grad()
    def evaluate(self) -> dict:
        """Loss/accuracy on the cv data. Every rank reads the whole cv list (as upstream's
        unpartitioned cv set), so no collective is needed and a cv list with fewer tars than
        ranks still works; all ranks get the same numbers."""
        if self.cv_loader is None:
            return {}
        module = self.engine.module
        was_training = module.training
        module.eval()
        meter = Meter()
        for batch in self.cv_loader:
            batch = batch.to(self.engine.device)
            with self.engine.autocast():
                meter.add(module(batch), len(batch.keys))
        module.train(was_training)
        if meter.nonfinite:
            logger.warning("cv: %d batch(es) had a NaN/Inf loss and are left out of the cv numbers",
                           meter.nonfinite)
        metrics = meter.summary(reduce=False)
        return {k: v for k, v in metrics.items() if not k.endswith("_per_s")}

    def _cv_at_start(self):
        """The untrained model's cv numbers: the baseline a run's progress is read against."""
        cv = self.evaluate()
        if rank() == 0 and cv:
            logger.info("CV before training: %s", format_metrics(cv))
            for k, v in cv.items():
                self.writer and self.writer.add_scalar(f"cv/{k}", v, 0)
            ckpt_io.atomic_write_yaml({"step": 0, "loss_dict": cv},
                                      os.path.join(self.model_dir, "cv_start.yaml"))

    # -- checkpoints ---------------------------------------------------------
    def save(self, tag: str, epoch_done: bool = False):
        cv = self.evaluate()
        if rank() == 0 and cv:
            logger.info("CV %s step %d: %s", tag, self.state.step, format_metrics(cv))
            for k, v in cv.items():
                self.writer and self.writer.add_scalar(f"cv/{k}", v, self.state.step)
        self.engine.save(self.model_dir, tag, self.save_states)
        rngs = gather_objects(ckpt_io.rng_state())
        position = gather_objects(dict(self._worker_batches) if self.state.batch_idx else {})
        if rank() == 0:
            ckpt_io.atomic_torch_save({"ranks": rngs}, ckpt_io.paths(self.model_dir, tag)["rng"])
        if world_size() > 1:
            dist.barrier()
        if rank() == 0:
            info = {**self.config, **asdict(self.state), "tag": tag, "epoch_done": epoch_done,
                    "lrs": self.engine.lrs(), "loss_dict": cv, "world_size": world_size(), "data_position": position,
                    "save_time": datetime.datetime.now().isoformat(timespec="seconds")}
            ckpt_io.write_info(self.model_dir, tag, info)
            ckpt_io.prune_checkpoints(self.model_dir, self.keep)
            logger.info("saved checkpoint %s", os.path.join(self.model_dir, tag))

    def _write_final(self):
        if rank() == 0:
            path = os.path.join(self.model_dir, ckpt_io.FINAL)
            ckpt_io.atomic_torch_save(
                {k: v.float() if v.is_floating_point() else v
                 for k, v in self.engine.module.state_dict().items()}, path)
            logger.info("final model weights: %s (step %d)", path, self.state.step)
        if world_size() > 1:
            dist.barrier()

    # -- logging -------------------------------------------------------------
    def _total_steps(self) -> int | None:
        """Optimizer steps this run ends at: max_steps, or max_epoch epochs once one epoch's steps
        are known (whichever comes first); None before that."""
        totals = [self.max_steps] if self.max_steps else []
        if self._steps_per_epoch:
            totals.append(self._steps_per_epoch * self.max_epoch)
        return min(totals) if totals else None

    def _progress(self):
        """Rank 0's steps done / total, steps/s and ETA: a live line on a terminal; in a log, part
        of each TRAIN line."""
        if rank() != 0:
            return None
        from osum_echat.progress import Progress

        return Progress(self._total_steps(), desc=os.path.basename(os.path.normpath(self.model_dir)),
                        unit="step", initial=self.state.step, echo=sys.stderr.isatty())

    def _progress_text(self, bar) -> str:
        text = bar.status()
        if bar.total is None:  # no total yet: the epoch count says how far
            text = f"epoch {self.state.epoch + 1}/{self.max_epoch}, " + text
        return f"{bar.desc} {text}"

    def _log_train(self, meter, grad_norm, bar):
        m = meter.summary()
        if rank() != 0:
            return
        lrs = self.engine.lrs()
        st = self.state
        if self.writer is not None:
            for k, v in m.items():
                self.writer.add_scalar(f"train/{k}", v, st.step)
            for i, lr in enumerate(lrs):
                self.writer.add_scalar(f"train/lr_{i}" if i else "train/lr", lr, st.step)
            self.writer.add_scalar("train/grad_norm", grad_norm, st.step)
            self.writer.flush()
        text = (f"epoch {st.epoch} step {st.step} {format_metrics(m)} lr {lrs[0]:.3e} "
                f"grad_norm {grad_norm:.3f} {m['tokens_per_s']:.0f} tok/s "
                f"{m['samples_per_s']:.1f} samples/s")
        if bar is not None and bar.echo:
            bar.write(f"TRAIN {text}")
        else:
            logger.info("TRAIN %s%s", text, f" | {self._progress_text(bar)}" if bar is not None else "")
