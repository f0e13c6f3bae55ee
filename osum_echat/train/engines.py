"""Training engines: how one micro-batch's loss becomes a parameter update.

    single     one process (CPU demo, one GPU)
    torch_ddp  torch DistributedDataParallel (nccl / hccl / gloo)
    deepspeed  DeepSpeed (ZeRO-2 with conf/ds_stage2.json)

All three offer the same small interface, so the trainer loop has no engine
branches: `forward(batch)`, `backward(loss)`, `step() -> grad norm or None`,
`accumulating()` (skip gradient sync on non-boundary micro-batches),
`save(model_dir, tag, with_state)`, `load(ckpt)` and `module` (the bare model).
"""
from __future__ import annotations

import contextlib
import json
import math
import os

import torch
import torch.distributed as dist

from osum_echat.train import checkpointing as ckpt_io
from osum_echat.train import devices
from osum_echat.train.devices import supports_bf16
from osum_echat.utils import get_logger

logger = get_logger(__name__)

ENGINES = ("single", "torch_ddp", "deepspeed")


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def autocast_dtype(device: torch.device, use_amp: bool):
    """bf16 where the accelerator supports it and amp is asked for; fp32 (None) otherwise."""
    if use_amp and supports_bf16(device):
        return torch.bfloat16
    if use_amp:
        logger.info("use_amp: %s has no bf16 support here, training in fp32", device)
    return None


class Engine:
    """The plain single-process engine; the others override a few methods."""

    name = "single"
    drops_bad_updates = True  # a non-finite grad norm at the boundary skips the update

    def __init__(self, model, optimizer, scheduler, device, accum_grad=1, grad_clip=5.0,
                 amp_dtype=None):
        self.model = model
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.device = device
        self.accum_grad = accum_grad
        self.grad_clip = grad_clip
        self.amp_dtype = amp_dtype
        self.micro_step = 0
        self.trainable = [p for p in self.module.parameters() if p.requires_grad]

    @property
    def module(self) -> torch.nn.Module:
        return self.model

    def is_boundary(self) -> bool:
        return (self.micro_step + 1) % self.accum_grad == 0

    def accumulating(self):
        return contextlib.nullcontext()

    def autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def forward(self, batch) -> dict:
        with self.autocast():
            return self.model(batch)

    def with_all_parameters(self, loss: torch.Tensor) -> torch.Tensor:
        """loss + 0 x one element of every trainable parameter.

        Batch types use different parts of the model (a text-only batch never reaches the
        encoder, and with a frozen LLM trains nothing at all), yet DDP and ZeRO-2 reduce
        gradients as parameters report ready, so every rank must give every trainable
        parameter a gradient at every step. This also lets DDP run without
        find_unused_parameters (upstream needs it on).
        """
        return loss + 0.0 * sum(p.reshape(-1)[0] for p in self.trainable)

    def backward(self, loss: torch.Tensor) -> None:
        (self.with_all_parameters(loss) / self.accum_grad).backward()

    def step(self):
        """Update at accumulation boundaries; returns the grad norm there, else None.

        A non-finite grad norm (NaN/Inf loss on any rank reaches every rank through the
        gradient all-reduce) skips the update on all ranks alike.
        """
        boundary = self.is_boundary()
        self.micro_step += 1
        if not boundary:
            return None
        grad_norm = torch.nn.utils.clip_grad_norm_(self.trainable, self.grad_clip)
        if torch.isfinite(grad_norm):
            self.optimizer.step()
            self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(grad_norm)

    def lrs(self) -> list[float]:
        return [g["lr"] for g in self.optimizer.param_groups]

    def drop_partial_accumulation(self) -> int:
        """At an epoch end: forget gradients of an unfinished accumulation, so that every
        checkpoint sits on an update boundary and resume is exact. Returns micro-batches dropped."""
        partial = self.micro_step % self.accum_grad
        if partial:
            self.optimizer.zero_grad(set_to_none=True)
        self.micro_step = 0
        return partial

    # -- checkpoints -------------------------------------------------------
    def save(self, model_dir: str, tag: str, with_state: bool) -> None:
        if rank() != 0:
            return
        p = ckpt_io.paths(model_dir, tag)
        ckpt_io.atomic_torch_save(self.module.state_dict(), p["model"])
        if with_state:
            ckpt_io.atomic_torch_save({"optimizer": self.optimizer.state_dict(),
                                       "scheduler": self.scheduler.state_dict()}, p["state"])

    def load(self, ckpt: dict) -> bool:
        """Restore model (+ optimizer/scheduler when saved); True if the full state came back."""
        state = torch.load(ckpt["model"], map_location="cpu", weights_only=True, mmap=True)
        self.module.load_state_dict(state)
        if not os.path.exists(ckpt["state"]):
            return False
        state = torch.load(ckpt["state"], map_location="cpu", weights_only=True)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        return True


class DDPEngine(Engine):
    name = "torch_ddp"

    def __init__(self, model, optimizer, scheduler, device, **kwargs):
        ids = [device.index] if devices.is_accelerator(device) else None
        # every trainable parameter gets a gradient (see Engine.with_all_parameters)
        ddp = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids,
                                                        find_unused_parameters=False)
        super().__init__(ddp, optimizer, scheduler, device, **kwargs)

    @property
    def module(self):
        return self.model.module

    def accumulating(self):
        return contextlib.nullcontext() if self.is_boundary() else self.model.no_sync()


class DeepSpeedEngine(Engine):
    """DeepSpeed owns accumulation, clipping, the optimizer step and the lr schedule."""

    name = "deepspeed"
    drops_bad_updates = False  # its step() always applies: the trainer skips bad micro-batches

    def __init__(self, model, optimizer, scheduler, device, accum_grad=1, grad_clip=5.0,
                 amp_dtype=None, ds_config=None):
        import deepspeed
        engine, optimizer, _, scheduler = deepspeed.initialize(
            model=model, optimizer=optimizer, lr_scheduler=scheduler, config=ds_config,
            model_parameters=[p for p in model.parameters() if p.requires_grad])
        super().__init__(engine, optimizer, scheduler, device, accum_grad, grad_clip, None)
        bf16 = ds_config.get("bf16", {}).get("enabled", False)
        fp16 = ds_config.get("fp16", {}).get("enabled", False)
        self.amp_dtype = torch.bfloat16 if bf16 else (torch.float16 if fp16 else None)

    @property
    def module(self):
        return self.model.module

    def is_boundary(self) -> bool:
        return self.model.is_gradient_accumulation_boundary()

    def forward(self, batch):
        with self.autocast():
            return self.model(batch)

    def backward(self, loss):
        self.model.backward(self.with_all_parameters(loss))

    def step(self):
        boundary = self.is_boundary()
        self.micro_step += 1
        self.model.step()
        if not boundary:
            return None
        norm = self.model.get_global_grad_norm()
        return float(norm) if norm is not None else math.nan

    def lrs(self):
        return [g["lr"] for g in self.optimizer.param_groups]

    def drop_partial_accumulation(self) -> int:
        return 0  # DeepSpeed keeps its own micro-step count; its checkpoints carry it

    def save(self, model_dir, tag, with_state):
        # every rank takes part; rank 0 also writes the plain .pt used by the next stage
        if with_state:
            self.model.save_checkpoint(model_dir, tag=tag)
        if rank() == 0:
            ckpt_io.atomic_torch_save(
                {k: v.float() if v.is_floating_point() else v
                 for k, v in self.module.state_dict().items()},
                ckpt_io.paths(model_dir, tag)["model"])

    def load(self, ckpt):
        if os.path.isdir(ckpt["ds_dir"]):
            self.model.load_checkpoint(os.path.dirname(ckpt["ds_dir"]), tag=ckpt["tag"])
            return True
        state = torch.load(ckpt["model"], map_location="cpu", weights_only=True, mmap=True)
        self.module.load_state_dict(state)
        return False


def load_ds_config(path: str, conf: dict, device: torch.device) -> dict:
    """Read ds_config.json and make it agree with the training YAML.

    Upstream asserts that accum_grad / grad_clip / log_interval match the json; here the
    YAML wins and a difference is logged. Batching is done by our own data pipeline, so the
    micro batch size is always 1 (one pre-batched item per step). bf16/fp16 are turned off
    on CPU, where the demo trains in fp32.
    """
    with open(path, encoding="utf8") as f:
        ds = json.load(f)
    wanted = {"train_micro_batch_size_per_gpu": 1,
              "gradient_accumulation_steps": conf.get("accum_grad", 1),
              "gradient_clipping": conf.get("grad_clip", 5.0),
              "steps_per_print": conf.get("log_interval", 10)}
    for key, value in wanted.items():
        if key in ds and ds[key] != value:
            logger.warning("%s: %s=%s replaced by %s from the training config", path, key, ds[key], value)
        ds[key] = value
    if device.type == "cpu":
        for key in ("bf16", "fp16"):
            if ds.get(key, {}).get("enabled"):
                logger.info("%s: %s disabled on CPU (fp32 training)", path, key)
                ds[key]["enabled"] = False
        ds.get("zero_optimization", {}).get("offload_optimizer", {}).pop("pin_memory", None)
    ds.pop("train_batch_size", None)
    return ds


def build_engine(name, model, optimizer, scheduler, device, conf, use_amp=False,
                 deepspeed_config=None):
    if name not in ENGINES:
        raise ValueError(f"unknown train engine '{name}': use one of {', '.join(ENGINES)}")
    common = dict(accum_grad=conf.get("accum_grad", 1), grad_clip=conf.get("grad_clip", 5.0))
    if name == "deepspeed":
        if not deepspeed_config:
            raise ValueError("--train_engine deepspeed needs --deepspeed_config (e.g. conf/ds_stage2.json)")
        ds = load_ds_config(deepspeed_config, conf, device)
        return DeepSpeedEngine(model, optimizer, scheduler, device, ds_config=ds, **common)
    amp = autocast_dtype(device, use_amp)
    if name == "torch_ddp" and world_size() > 1:
        return DDPEngine(model, optimizer, scheduler, device, amp_dtype=amp, **common)
    return Engine(model, optimizer, scheduler, device, amp_dtype=amp, **common)
