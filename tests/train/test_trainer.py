"""Trainer logic on a toy model: exact resume, NaN handling, retention, atomic files."""
import os
import random
import sys

import numpy as np

import pytest
import torch

from osum_echat.train import checkpointing as ckpt_io
from osum_echat.train.engines import build_engine
from osum_echat.train.scheduler import WarmupLR
from osum_echat.train.trainer import NoTrainingData, Trainer, TooManyNaNs

sys.path.insert(0, os.path.dirname(__file__))
from toy import ToyDataset, ToyModel  # noqa: E402


def make_trainer(model_dir, dataset, **conf):
    torch.manual_seed(0)
    model = ToyModel()
    opt = torch.optim.AdamW(model.parameters(), lr=0.05)
    sched = WarmupLR(opt, warmup_steps=3)
    config = {**dict(accum_grad=2, grad_clip=5.0, log_interval=2, save_interval=3, max_epoch=2,
                     keep_checkpoint_max=50), **conf}
    engine = build_engine("single", model, opt, sched, torch.device("cpu"), config)
    return Trainer(engine, dataset, dataset, None, config, str(model_dir))


def params(trainer):
    return {k: v.clone() for k, v in trainer.engine.module.state_dict().items()}


@pytest.mark.parametrize("num_batches, per_epoch", [(12, 6), (11, 5)])
def test_resume_continues_exactly(tmp_path, num_batches, per_epoch):
    # accum_grad 2: with 11 micro-batches an epoch ends half-way into an update (dropped)
    straight = make_trainer(tmp_path / "a", ToyDataset(num_batches))
    straight.fit()
    assert straight.state.step == 2 * per_epoch

    first = make_trainer(tmp_path / "b", ToyDataset(num_batches), max_steps=per_epoch + 2)
    first.fit()  # stops inside epoch 1, 4 micro-batches into it
    assert first.state.step == per_epoch + 2 and first.state.epoch == 1

    second = make_trainer(tmp_path / "b", ToyDataset(num_batches))
    assert second.resume()
    assert (second.state.step, second.state.epoch, second.state.batch_idx) == (per_epoch + 2, 1, 4)
    second.fit()
    assert second.state.step == 2 * per_epoch
    for k, v in params(straight).items():
        torch.testing.assert_close(params(second)[k], v, rtol=0, atol=1e-6)
    # learning happened at all: the toy task is separable
    assert not torch.equal(params(straight)["lin.weight"], ToyModel().lin.weight)


class NoisyToyModel(ToyModel):
    """Draws from the torch, numpy and python global generators every step (dropout-like)."""

    def forward(self, batch):
        out = super().forward(batch)
        scale = 1 + float(np.random.rand()) + random.random()
        out["loss"] = torch.nn.functional.dropout(out["loss"].expand(4), 0.5).mean() * scale
        return out


@pytest.mark.parametrize("stop_at", [8, 6])  # mid-epoch, and exactly at the epoch end
def test_resume_restores_every_rng(tmp_path, stop_at):
    def trainer(model_dir, **conf):
        t = make_trainer(model_dir, ToyDataset(12), **conf)
        random.seed(0), np.random.seed(0), torch.manual_seed(0)  # as train.py's seed_everything
        t.engine.module.load_state_dict(NoisyToyModel().state_dict())
        t.engine.module.__class__ = NoisyToyModel
        return t

    straight = trainer(tmp_path / "a")
    straight.fit()
    first = trainer(tmp_path / "b", max_steps=stop_at)
    first.fit()
    assert os.path.exists(tmp_path / "b" / f"step_{stop_at}.rng.pt")
    second = trainer(tmp_path / "b")
    random.seed(1), np.random.seed(1), torch.manual_seed(1)  # whatever the new process would have
    assert second.resume()
    second.fit()
    for k, v in params(straight).items():
        torch.testing.assert_close(params(second)[k], v, rtol=0, atol=1e-6)
    # without the saved state the continuation differs: the test can fail
    for rng_file in (tmp_path / "b").glob("*.rng.pt"):
        rng_file.unlink()
    for c in ckpt_io.list_checkpoints(str(tmp_path / "b")):
        if c["info"]["step"] > stop_at:
            ckpt_io.remove_checkpoint(c)
    third = trainer(tmp_path / "b")
    assert third.resume()
    third.fit()
    assert not torch.equal(params(third)["lin.weight"], params(straight)["lin.weight"])


def test_resume_picks_newest_complete_checkpoint_and_cleans_debris(tmp_path):
    t = make_trainer(tmp_path, ToyDataset(), max_epoch=1)
    t.fit()
    steps = [c["info"]["step"] for c in ckpt_io.list_checkpoints(str(tmp_path))]
    assert steps == [3, 6, 6]  # step_3, step_6 and epoch_0 (epoch end, same step)
    # a save killed half-way: payload and temp file present, no yaml
    torch.save({}, tmp_path / "step_9.pt")
    (tmp_path / "step_9.pt.tmp.123").write_bytes(b"partial")
    t2 = make_trainer(tmp_path, ToyDataset(), max_epoch=1)
    assert t2.resume()
    assert t2.state.step == 6 and t2.state.epoch == 1 and t2.state.batch_idx == 0
    assert not (tmp_path / "step_9.pt.tmp.123").exists()


def test_keep_newest_n(tmp_path):
    t = make_trainer(tmp_path, ToyDataset(num_batches=24), max_epoch=1, save_interval=2,
                     keep_checkpoint_max=2)
    t.fit()
    tags = [c["tag"] for c in ckpt_io.list_checkpoints(str(tmp_path))]
    assert tags == ["step_12", "epoch_0"]
    assert sorted(os.listdir(tmp_path)) == sorted(
        ["step_12.pt", "step_12.state.pt", "step_12.rng.pt", "step_12.yaml", "epoch_0.pt", "epoch_0.state.pt",
         "epoch_0.rng.pt", "epoch_0.yaml", "final.pt"])


def test_nan_batches_are_skipped_and_counted(tmp_path):
    clean = make_trainer(tmp_path / "clean", ToyDataset(), max_epoch=1)
    clean.fit()
    t = make_trainer(tmp_path / "nan", ToyDataset(nan_batches={2, 3}), max_epoch=1)
    t.fit()
    assert t.state.nan_batches == 2
    assert t.state.skipped_updates == 1  # batches 2 and 3 form one accumulated update
    assert t.state.step == clean.state.step - 1
    for v in params(t).values():
        assert torch.isfinite(v).all()


def test_repeated_nans_stop_with_last_good_checkpoint(tmp_path):
    t = make_trainer(tmp_path, ToyDataset(nan_batches=range(6, 12)), max_epoch=1,
                     train_conf={"max_consecutive_nan": 3})
    with pytest.raises(TooManyNaNs, match="step_3.pt"):
        t.fit()
    last = ckpt_io.latest_checkpoint(str(tmp_path))
    assert last["tag"] == "step_3"
    state = torch.load(last["model"], weights_only=True)
    assert all(torch.isfinite(v).all() for v in state.values())
    assert not (tmp_path / "final.pt").exists()


def test_an_epoch_without_batches_stops_with_a_clear_error(tmp_path):
    t = make_trainer(tmp_path, ToyDataset(num_batches=0), max_epoch=1)
    with pytest.raises(NoTrainingData, match="no batch"):
        t.fit()


def test_train_lines_say_steps_done_of_total_rate_and_eta(tmp_path):
    """In a log: no total during the first epoch (the epoch count instead), then steps/total,
    steps/s and an ETA once one epoch's steps are known (max_epoch x steps per epoch)."""
    import logging

    lines = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())
    log = logging.getLogger("osum_echat.train.trainer")
    log.addHandler(handler)
    try:
        make_trainer(tmp_path, ToyDataset(num_batches=12), max_epoch=3, save_interval=0).fit()
    finally:
        log.removeHandler(handler)
    train = [line.split(" | ", 1)[1] for line in lines if line.startswith("TRAIN")]
    name = os.path.basename(tmp_path)
    assert len(train) == 9  # 12 micro-batches, accum 2: 6 steps per epoch, a line every 2 steps
    assert train[0].startswith(f"{name} epoch 1/3, 2 step, ") and "ETA" not in train[0]
    assert train[3].startswith(f"{name} 8/18 step (44%), ") and "step/s, ETA " in train[3]
    assert train[-1].startswith(f"{name} 18/18 step (100%)")
