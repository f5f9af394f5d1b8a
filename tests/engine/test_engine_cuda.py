"""The engine on a CUDA GPU: precisions, GradScaler, no host sync per step, NaN skip, resume.

Skipped on machines without CUDA (the CPU suite covers the same logic there).
"""

from __future__ import annotations

import pytest
import torch

from helpers import NUM_CLASSES, CrashAfter, SeededLoader, blobs, small_net
from helpers import loop_config as config
from resnetlab.checkpoint import load_checkpoint
from resnetlab.engine import TrainingDiverged, fit, loop, open_session
from resnetlab.engine.plan import make_plan
from resnetlab.engine.task import Classification

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def cuda_config(**train):
    cfg = config(**train)
    cfg.train.device = "cuda"
    return cfg


def gpu_data(n=256, seed=0):
    x, y = blobs(n, seed)
    return x.cuda(), y.cuda()


def cuda_run(tmp_path, cfg, train=None, model=None, name="run", **kw):
    train = train if train is not None else SeededLoader(*gpu_data(), 32)
    model = model if model is not None else small_net()
    result = fit(model, train, [gpu_data(64, seed=1)], cfg, tmp_path / name, num_classes=NUM_CLASSES,
                 extra_meta={}, progress=False, **kw)
    return model, result


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_trains_on_cuda_in_each_precision(tmp_path, precision):
    cfg = cuda_config(epochs=3, precision=precision, ema_decay=0.9, clip_grad_norm=5.0)
    model, result = cuda_run(tmp_path, cfg)
    assert next(model.parameters()).is_cuda
    assert result.history[-1]["val_top1"] > 0.9
    scaler = load_checkpoint(tmp_path / "run" / "checkpoints" / "last").train_state["scaler"]
    assert bool(scaler) == (precision == "fp16")  # a GradScaler only for fp16


def test_training_step_never_waits_for_the_gpu(tmp_path):
    cfg = cuda_config(epochs=1, precision="bf16", ema_decay=0.99, label_smoothing=0.1)
    x, y = gpu_data()
    loader = SeededLoader(x, y, 32)
    plan = make_plan(cfg, loader, task=Classification(NUM_CLASSES), has_val=False)
    session = open_session(small_net(), loader, None, plan, tmp_path,
                           num_classes=NUM_CLASSES, progress=False)
    batch = (x[:32], y[:32])
    loop.train_step(session, *batch)  # warm-up: lazy CUDA/cuDNN initialisation may synchronise
    loop._drain(session)
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(5):
            loop.train_step(session, *batch)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    loop._drain(session)
    assert session.guard.total == 0 and session.state.epoch_count == 6 * 32


def test_nan_streak_on_cuda_is_skipped_on_device_and_stops(tmp_path):
    from helpers import NaNAfter

    model = NaNAfter(small_net(), start=12)
    with pytest.raises(TrainingDiverged, match="at step 15 "):
        cuda_run(tmp_path, cuda_config(epochs=3, checkpoint_every=4, max_nonfinite_steps=3), model=model)
    ckpt = load_checkpoint(tmp_path / "run" / "checkpoints" / "last")
    assert ckpt.meta["step"] == 12
    for name, param in model.named_parameters():
        assert torch.equal(param.detach().cpu(), ckpt.model_state[name]), name


def test_exact_resume_on_cuda(tmp_path):
    cfg = cuda_config(epochs=2, checkpoint_every=5, deterministic=True, precision="bf16")
    x, y = gpu_data()
    straight, _ = cuda_run(tmp_path, cfg, train=SeededLoader(x, y, 32), model=small_net(0.2), name="a")
    with pytest.raises(KeyboardInterrupt):
        cuda_run(tmp_path, cfg, train=CrashAfter(SeededLoader(x, y, 32), 11), model=small_net(0.2), name="b")
    resumed, _ = cuda_run(tmp_path, cfg, train=SeededLoader(x, y, 32), model=small_net(0.2), name="b",
                          resume=True)
    for key, value in straight.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key


def test_compile(tmp_path):
    _, result = cuda_run(tmp_path, cuda_config(epochs=1, compile=True, precision="bf16"))
    assert result.steps == 8 and result.history[-1]["train_loss"] < 1.4
