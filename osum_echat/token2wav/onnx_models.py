"""The two ONNX front-end models of a CosyVoice-300M-25Hz directory: their signatures and loading.

Upstream feeds both files by position (`get_inputs()[0].name`, ...). The names,
element types and ranks below are those of the released files, as runtimes that
feed them by name use them:

campplus.onnx             input  "input"        float32 (batch, frames, 80)  Kaldi fbank, mean-normalised
                          output "output"       float32 (batch, 192)         x-vector
speech_tokenizer_v1.onnx  input  "feats"        float32 (batch, 128, frames) whisper log-mel, 100 frames/s
                          input  "feats_length" int32   (batch,)
                          output "indices"      int     (batch, 1, tokens)   codes in [0, 4096), 25/s

A file is checked when it is opened: a missing file, a file that is not ONNX,
or one whose inputs/outputs differ from these is one error naming the file and
what was expected. The output rank of "indices" is also accepted as 2 and its
element type as int32 or int64 (runtimes read both; the released file was not
available here to confirm which).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field


@dataclass(frozen=True)
class TensorSpec:
    name: str
    ranks: tuple                 # accepted ranks
    types: tuple                 # accepted onnxruntime type strings
    fixed: dict = field(default_factory=dict)  # axis -> size, checked when the model's axis is static

    def describe(self) -> str:
        dims = "/".join(str(r) for r in self.ranks)
        sizes = "".join(f", axis {a} = {n}" for a, n in self.fixed.items())
        return f"{self.name!r} {'|'.join(self.types)} rank {dims}{sizes}"


@dataclass(frozen=True)
class OnnxSignature:
    file: str
    inputs: tuple
    outputs: tuple


FLOAT, INT32, INT64 = "tensor(float)", "tensor(int32)", "tensor(int64)"

CAMPPLUS = OnnxSignature(
    file="campplus.onnx",
    inputs=(TensorSpec("input", (3,), (FLOAT,), {2: 80}),),
    outputs=(TensorSpec("output", (2,), (FLOAT,), {1: 192}),),
)
SPEECH_TOKENIZER = OnnxSignature(
    file="speech_tokenizer_v1.onnx",
    inputs=(TensorSpec("feats", (3,), (FLOAT,), {1: 128}), TensorSpec("feats_length", (1,), (INT32,))),
    outputs=(TensorSpec("indices", (3, 2), (INT64, INT32)),),
)


def default_providers() -> list:
    """The execution providers this machine's onnxruntime offers, in its priority order."""
    import onnxruntime as ort

    return list(ort.get_available_providers())


def _mismatch(kind: str, node, spec: TensorSpec) -> str | None:
    if node.name != spec.name:
        return f"{kind} named {node.name!r}, expected {spec.name!r}"
    if node.type not in spec.types:
        return f"{kind} {node.name!r} has type {node.type}, expected {'|'.join(spec.types)}"
    if len(node.shape) not in spec.ranks:
        return f"{kind} {node.name!r} has shape {node.shape}, expected rank {'/'.join(map(str, spec.ranks))}"
    for axis, size in spec.fixed.items():
        dim = node.shape[axis]
        if isinstance(dim, int) and dim != size:
            return f"{kind} {node.name!r} has shape {node.shape}, expected size {size} on axis {axis}"
    return None


def check_signature(session, signature: OnnxSignature, path) -> None:
    """Raise ValueError naming the file when the session's inputs/outputs are not `signature`'s."""
    problems = []
    for kind, nodes, specs in (("input", session.get_inputs(), signature.inputs),
                               ("output", session.get_outputs(), signature.outputs)):
        if len(nodes) != len(specs):
            problems.append(f"{len(nodes)} {kind}s ({', '.join(n.name for n in nodes)}), expected {len(specs)}")
            continue
        problems += [p for p in (_mismatch(kind, n, s) for n, s in zip(nodes, specs)) if p]
    if problems:
        expected = "; ".join(f"in {s.describe()}" for s in signature.inputs)
        expected += "; " + "; ".join(f"out {s.describe()}" for s in signature.outputs)
        raise ValueError(f"{path}: wrong ONNX signature for {signature.file}: {'; '.join(problems)} "
                         f"(expected {expected})")


def open_session(path, signature: OnnxSignature, providers=None, threads: int | None = None):
    """An onnxruntime session of `path`, checked against `signature`.

    providers: None = the machine's (default_providers()); threads: None = torch's
    thread count (which honours OMP_NUM_THREADS)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: missing; a CosyVoice-300M-25Hz directory holds {signature.file} "
                                f"(or make a tiny one: python -m osum_echat.bin.token2wav make-tiny DIR)")
    import onnxruntime as ort
    import torch

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = int(threads or torch.get_num_threads())
    opts.log_severity_level = 3
    try:
        session = ort.InferenceSession(path, sess_options=opts,
                                       providers=list(providers) if providers else default_providers())
    except Exception as e:  # onnxruntime raises its own (non-exported) exception types
        raise ValueError(f"{path}: not a loadable ONNX model for {signature.file}: {e}") from e
    check_signature(session, signature, path)
    return session
