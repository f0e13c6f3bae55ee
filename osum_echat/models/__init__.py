"""OSUM-EChat model: encoder, adapter, LLM, speech head, loss, checkpoints."""
from osum_echat.models.build import build_model, load_for_inference, load_model  # noqa: F401
from osum_echat.models.osum_echat import OsumEChat  # noqa: F401
