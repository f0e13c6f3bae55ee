"""OSUM-EChat model: encoder, adapter, LLM, speech head, loss, checkpoints."""
from osum_echat.models.osum_echat import OsumEChat, build_model  # noqa: F401
