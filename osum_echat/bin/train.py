"""Train OSUM-EChat: one process, or one per device under torchrun / the deepspeed launcher.

Upstream's launch line works unchanged, e.g.
  torchrun --nnodes=1 --nproc_per_node=8 -m osum_echat.bin.train \\
    --train_engine deepspeed --config conf/ct_config.yaml --data_type shard \\
    --train_data_s2t s2t.list --train_data_t2s t2s.list --train_data_s2s s2s.list \\
    --train_data_t2t t2t.list --cv_data cv.list --model_dir exp/x \\
    --tensorboard_dir exp/x/tensorboard --ddp.dist_backend nccl --num_workers 1 \\
    --prefetch 50 --pin_memory --timeout 1200 --use_amp \\
    --deepspeed_config conf/ds_stage2.json --deepspeed.save_states model+optimizer

Running the same command again continues from the newest checkpoint in --model_dir.
"""
from __future__ import annotations

import argparse
import datetime
import os
import random
import socket

import numpy as np
import torch
import torch.distributed as dist
import yaml

from osum_echat.config import ConfigError, load_config
from osum_echat.train import checkpointing as ckpt_io
from osum_echat.train.devices import DeviceError, dist_backend, select_device, set_device
from osum_echat.train.engines import ENGINES, build_engine, rank
from osum_echat.train.scheduler import build_scheduler
from osum_echat.train.trainer import NoTrainingData, Trainer, TooManyNaNs
from osum_echat.utils import fail, get_logger

logger = get_logger("osum_echat.train")

DIRECTIONS = ("s2t", "t2s", "s2s", "t2t")


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train_engine", default="torch_ddp",
                   help="single | torch_ddp | deepspeed (torch_ddp with one process = single)")
    p.add_argument("--device", default=None, help="cuda | npu | cpu; default: detect")
    p.add_argument("--config", required=True, help="training YAML (upstream ct_config.yaml schema)")
    p.add_argument("--override_config", action="append", default=[],
                   help="key.sub=value, repeatable")
    p.add_argument("--model_dir", required=True, help="checkpoints, train.yaml, final.pt go here")
    p.add_argument("--checkpoint", help="initialise the model from this .pt (ignored when resuming)")
    p.add_argument("--tensorboard_dir", default=None,
                   help="default: MODEL_DIR/tensorboard; events go to TENSORBOARD_DIR/<model_dir name>")
    # data
    p.add_argument("--data_type", default="raw", help="raw | shard | combine")
    for d in DIRECTIONS:
        p.add_argument(f"--train_data_{d}", default=None, help=f"{d} data list")
    p.add_argument("--train_data", default=None, help="one list for all directions")
    p.add_argument("--cv_data", default=None, help="cross-validation list (same data_type)")
    p.add_argument("--data_root", default=None, help="root for relative paths inside the lists")
    p.add_argument("--num_workers", type=int, default=0)
    p.add_argument("--prefetch", type=int, default=100)
    p.add_argument("--pin_memory", action="store_true")
    p.add_argument("--data_index", default=None,
                   help="folder of the per-sample facts a resumed run seeks with (osum_echat/data/data_index.py); "
                        "default MODEL_DIR/data_index; 'none': off (a resume then decodes what it passes over)")
    # distributed / precision
    p.add_argument("--ddp.dist_backend", dest="dist_backend", default=None,
                   choices=["nccl", "gloo", "hccl"], help="default: from the device")
    p.add_argument("--use_amp", action="store_true", help="bf16 autocast where supported")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                   help="dtype the model is built/loaded in: float32 (with --use_amp or DeepSpeed "
                        "bf16 for mixed precision) or bfloat16 (pure bf16, e.g. the 24 GB LoRA recipe)")
    p.add_argument("--timeout", type=int, default=1800, help="collective timeout, seconds")
    p.add_argument("--local_rank", type=int, default=-1, help="set by the deepspeed launcher")
    p.add_argument("--deepspeed", action="store_true", help="(upstream; same as --train_engine deepspeed)")
    p.add_argument("--deepspeed_config", default=None, help="e.g. conf/ds_stage2.json")
    p.add_argument("--deepspeed.save_states", dest="save_states", default="model+optimizer",
                   choices=["model_only", "model+optimizer"],
                   help="what checkpoints hold; model+optimizer allows exact resume")
    # this project
    p.add_argument("--max_steps", type=int, default=None, help="stop after N optimizer steps")
    p.add_argument("--no_resume", action="store_true", help="ignore checkpoints in --model_dir")
    # accepted for upstream launch lines, not used
    p.add_argument("--load_dir", default=None, help=argparse.SUPPRESS)
    p.add_argument("--ckpt_id", default=None, help=argparse.SUPPRESS)
    p.add_argument("--jit", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--print_model", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--use_lora", type=lambda s: s.lower() in ("1", "true", "yes"), default=None,
                   help="override the config's use_lora")
    return p


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def free_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def init_distributed(engine: str, device: torch.device, backend: str | None, timeout: int) -> None:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1 and engine != "deepspeed":
        return
    for key, value in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "1"),
                       ("MASTER_ADDR", "127.0.0.1")):
        os.environ.setdefault(key, value)
    os.environ.setdefault("MASTER_PORT", free_port())
    backend = backend or dist_backend(device)
    set_device(device)
    if engine == "deepspeed":
        import deepspeed
        deepspeed.init_distributed(dist_backend=backend, auto_mpi_discovery=False,
                                   timeout=datetime.timedelta(seconds=timeout))
    else:
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout))
    logger.info("rank %d of %d on %s (%s)", dist.get_rank(), dist.get_world_size(), device, backend)


def data_lists(args) -> dict | str:
    lists = {d: getattr(args, f"train_data_{d}") for d in DIRECTIONS}
    lists = {d: path for d, path in lists.items() if path}
    if args.train_data:
        return args.train_data if not lists else {**{d: args.train_data for d in DIRECTIONS}, **lists}
    if not lists:
        fail("no training data: give --train_data_s2t/--train_data_t2s/--train_data_s2s/"
             "--train_data_t2t (upstream) or --train_data")
    return lists


def build_optimizer(model, config):
    name = config.get("optim", "adamw").lower()
    conf = dict(config.get("optim_conf", {}))
    if isinstance(conf.get("lr"), list):
        raise ConfigError("optim_conf.lr as a per-module list is not supported; give one lr")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ConfigError(f"fire_module={config.get('fire_module')!r} leaves nothing to train")
    classes = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam}
    if name not in classes:
        raise ConfigError(f"optim: unknown optimizer {name!r}; use adamw or adam")
    return classes[name](params, **conf)


def initial_model(config, tokenizer, path: str | None, dtype: torch.dtype):
    """The model from `path` (lean load: no throw-away random init; partial
    checkpoints are completed by a full build), else freshly initialised."""
    from osum_echat.models import build_model, load_model
    if path is None:
        return build_model(config, "cpu", tokenizer, llm_dtype=dtype).to(dtype)
    if not os.path.isfile(path):
        fail(f"--checkpoint {path}: file not found")
    model, _ = load_model(config, path, "cpu", dtype, tokenizer, strict=False)
    return model


def step_of(checkpoint: str) -> int:
    """The step recorded beside an upstream-style checkpoint (TAG.pt -> TAG.yaml), else 0."""
    info_path = os.path.splitext(checkpoint)[0] + ".yaml"
    if not os.path.isfile(info_path):
        return 0
    with open(info_path, encoding="utf8") as f:
        info = yaml.safe_load(f) or {}
    return int(info.get("step", 0))


def freeze(model, fire_module: str) -> None:
    from osum_echat.train.freeze import apply_fire_module
    apply_fire_module(model, fire_module)
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    n_all = sum(p.numel() for p in model.parameters())
    logger.info("fire_module=%s: %d of %d parameters train", fire_module, n_train, n_all)


def save_resolved_config(config: dict, model_dir: str) -> None:
    if rank() == 0:
        ckpt_io.atomic_write_yaml(config, os.path.join(model_dir, "train.yaml"))


def make_writer(args):
    if rank() != 0:
        return None
    from torch.utils.tensorboard import SummaryWriter
    root = args.tensorboard_dir or os.path.join(args.model_dir, "tensorboard")
    return SummaryWriter(os.path.join(root, os.path.basename(os.path.normpath(args.model_dir))))


def build_loaders(args, config, tokenizer):
    from osum_echat.data.dataset import build_dataloader, build_dataset
    train = build_dataset(config, args.data_type, data_lists(args), tokenizer,
                          root=args.data_root, mode="train")
    index = args.data_index or os.path.join(args.model_dir, "data_index")
    train.use_data_index(None if index.lower() == "none" else index)
    loader = build_dataloader(train, args.num_workers, args.prefetch, args.pin_memory)
    cv_loader = None
    if args.cv_data:
        # every rank evaluates the whole cv list (rank 0 of 1), see Trainer.evaluate
        cv = build_dataset(config, args.data_type, args.cv_data, tokenizer, root=args.data_root,
                           mode="eval", rank=0, world_size=1)
        cv_loader = build_dataloader(cv, 0, args.prefetch, args.pin_memory)
    return train, loader, cv_loader


def build(args, config, engine_name, device):
    """Tokenizer, data (lists are checked before the model is built), model, engine."""
    from osum_echat.tokenizer import load_tokenizer
    tokenizer = load_tokenizer(config["llm_path"])
    train_dataset, train_loader, cv_loader = build_loaders(args, config, tokenizer)
    latest = None if args.no_resume else ckpt_io.latest_checkpoint(args.model_dir)
    resuming = latest is not None
    # resuming: start from the checkpoint's own weights (the engine then restores the rest)
    init = (latest["model"] if os.path.isfile(latest["model"]) else None) if resuming else args.checkpoint
    model = initial_model(config, tokenizer, init, getattr(torch, args.dtype))
    freeze(model, config.get("fire_module", "link_and_encoder"))
    model.to(device)
    optimizer = build_optimizer(model, config)
    scheduler = build_scheduler(config.get("scheduler", "warmuplr"), optimizer,
                                config.get("scheduler_conf"))
    engine = build_engine(engine_name, model, optimizer, scheduler, device, config,
                          use_amp=args.use_amp, deepspeed_config=args.deepspeed_config)
    config.setdefault("train_conf", {}).update(
        train_engine=engine.name, world_size=int(os.environ.get("WORLD_SIZE", "1")),
        use_amp=args.use_amp, save_states=args.save_states, data_type=args.data_type,
        checkpoint=args.checkpoint, device=device.type, dtype=args.dtype)
    save_resolved_config(config, args.model_dir)
    return engine, train_dataset, train_loader, cv_loader, resuming


def main(argv=None) -> None:
    args = get_parser().parse_args(argv)
    engine_name = "deepspeed" if args.deepspeed else args.train_engine
    if engine_name not in ENGINES:
        fail(f"--train_engine {engine_name}: use one of {', '.join(ENGINES)}")
    try:
        config = load_config(args.config, args.override_config)
    except ConfigError as e:
        fail(str(e))
    if args.max_steps is not None:
        config["max_steps"] = args.max_steps
    if args.use_lora is not None:
        config["use_lora"] = args.use_lora
    seed_everything(int(config.get("seed", 777)))
    try:
        device = select_device(args.device or config.get("device") or None)
    except DeviceError as e:
        fail(str(e))
    init_distributed(engine_name, device, args.dist_backend, args.timeout)
    os.makedirs(args.model_dir, exist_ok=True)

    from osum_echat.models.checkpoint import CheckpointError
    try:
        trainer_parts = build(args, config, engine_name, device)
    except (ConfigError, CheckpointError) as e:
        fail(str(e))
    engine, train_dataset, train_loader, cv_loader, resuming = trainer_parts
    writer = make_writer(args)
    trainer = Trainer(engine, train_dataset, train_loader, cv_loader, config, args.model_dir,
                      writer=writer, save_states=args.save_states == "model+optimizer")
    if resuming:
        trainer.resume()
    elif args.checkpoint and not config.get("init_step", True):
        trainer.start_at_step(step_of(args.checkpoint))
    try:
        state = trainer.fit()
    except (TooManyNaNs, NoTrainingData) as e:
        fail(str(e), code=3)
    finally:
        if writer is not None:
            writer.close()
    logger.info("done: %d steps, %d non-finite batches, %d skipped updates", state.step,
                state.nan_batches, state.skipped_updates)
    if dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
