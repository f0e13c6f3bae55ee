"""The flow's velocity estimator run by ONNX Runtime on the CPU.

The estimator is the heavy part of token2wav (10 Euler steps x one U-Net pass over 2 rows per window).
Eager PyTorch spends much of a pass dispatching ops one at a time; ONNX Runtime runs the same graph
1.5-1.9x faster at full size and 2-3x on the tiny model (bench/bench_token2wav.py prints both). Upstream CosyVoice has the
same option (an exported `flow.decoder.estimator.fp32.onnx`, loaded with `load_onnx=True`); here the graph
is exported from the loaded weights when the backend is chosen, in memory, so no file is written or read.

Only float32 and unpadded batches (mask None, the inference case): the ODE loop in flow.py is unchanged, so
outputs equal the eager estimator's to float32 rounding (~1e-6), and pause points between passes stay.
"""
from __future__ import annotations

import io
import warnings

import torch
import torch.nn as nn

ESTIMATOR_BACKENDS = ("torch", "onnx")
ESTIMATOR_CHOICES = ("auto",) + ESTIMATOR_BACKENDS
INPUTS = ("x", "mu", "t", "spks", "cond")
_EXAMPLE_FRAMES = 34   # any length works: frames and rows are dynamic axes


def resolve_backend(choice: str, device, dtype) -> str:
    """"auto" -> "onnx" for a float32 flow on the CPU when onnxruntime is installed, else "torch"."""
    if choice != "auto":
        return choice
    if str(device).split(":")[0] != "cpu" or str(dtype).removeprefix("torch.") != "float32":
        return "torch"
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return "torch"
    return "onnx"


class _Unmasked(nn.Module):
    """The estimator's signature without the mask (None at inference), as the exporter needs tensors."""

    def __init__(self, estimator: nn.Module):
        super().__init__()
        self.estimator = estimator

    def forward(self, x, mu, t, spks, cond):
        return self.estimator(x, None, mu, t, spks, cond)


def export_estimator(estimator: nn.Module) -> bytes:
    """The estimator as ONNX bytes, rows and frames dynamic."""
    p = next(estimator.parameters())
    if p.dtype != torch.float32:
        raise ValueError(f"the ONNX estimator runs float32 weights; this flow is {p.dtype} "
                         "(load token2wav in float32, or use the torch estimator)")
    mel = estimator.final_proj.out_channels
    ex = (torch.zeros(2, mel, _EXAMPLE_FRAMES), torch.zeros(2, mel, _EXAMPLE_FRAMES), torch.zeros(2),
          torch.zeros(2, mel), torch.zeros(2, mel, _EXAMPLE_FRAMES))
    frames = {0: "rows", 2: "frames"}
    axes = {"x": frames, "mu": frames, "cond": frames, "v": frames, "t": {0: "rows"}, "spks": {0: "rows"}}
    buf = io.BytesIO()
    # group_norm's "one value per channel" check is traced as a constant: true for any real input
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        torch.onnx.export(_Unmasked(estimator).eval(), ex, buf, input_names=list(INPUTS),
                          output_names=["v"], dynamic_axes=axes, opset_version=18, dynamo=False)
    return buf.getvalue()


class OnnxEstimator:
    """Callable like the torch estimator: (x, mask=None, mu, t, spks, cond) -> velocity, float32 CPU tensors."""

    dtype = torch.float32

    def __init__(self, estimator: nn.Module, threads: int | None = None):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or torch.get_num_threads()
        opts.inter_op_num_threads = 1
        # no busy-waiting for work: on a shared machine a spinning thread takes the core the decoder needs
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(export_estimator(estimator), opts, providers=["CPUExecutionProvider"])

    def __call__(self, x, mask, mu, t, spks, cond) -> torch.Tensor:
        if mask is not None:
            raise ValueError("the ONNX estimator runs unpadded batches only (mask None)")
        feed = {name: v.detach().float().contiguous().numpy() for name, v in zip(INPUTS, (x, mu, t, spks, cond))}
        return torch.from_numpy(self.session.run(None, feed)[0])
