"""OSUM-EChat: speech encoder + adapter + Qwen2 LLM + speech-token head.

One routine, `assemble`, turns a Batch into the LLM input for every
output_type, reading the task table (osum_echat/tasks.py):

    system prompt + "<|im_start|>user\\n"
    [user prompt]          spec.uses_prompt (and the batch has one)
    [history turns]        speech in and speech out (upstream's four s2s types)
    [input]                speech: <sos> speech embeds ... pad <eos>
                           text in + speech out: the target text without eos
    "<|im_end|>\\n<|im_start|>assistant\\n"
    output                 streaming: 6 text / 18 speech tokens interleaved
                           else: text labels (spec.text_target) then speech tokens

Each part is padded on its own and the parts are concatenated, so a padded
batch has holes inside the sequence; the attention mask covers them and the
position ids count only real positions (upstream layout, kept for fidelity).

Attribute names match upstream's LLMASR_Model so its checkpoints load as is.
Decoding builds its prompt with `assemble(batch, with_output=False)`.
"""
from __future__ import annotations

import dataclasses
from typing import Optional

import torch
from torch import nn
from torch.nn.utils.rnn import pad_sequence

from osum_echat import tasks as task_table
from osum_echat.models.embed_cache import SpeechEmbedCache
from osum_echat.models.adapter import (BatchNormDownsampler, build_adapter_transformer,
                                       build_downsampler)
from osum_echat.models.loss import IGNORE_ID, shifted_loss
from osum_echat.models.whisper_encoder import build_whisper_encoder

STREAM_TEXT_CHUNK = task_table.STREAM_TEXT_CHUNK
STREAM_SPEECH_CHUNK = task_table.STREAM_SPEECH_CHUNK


@dataclasses.dataclass
class Segment:
    embeds: torch.Tensor  # (B, L, D)
    mask: torch.Tensor  # (B, L) bool, True = real position
    target: torch.Tensor  # (B, L) long, IGNORE_ID where nothing is learnt


@dataclasses.dataclass
class Assembled:
    inputs_embeds: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    target: torch.Tensor


def spec_for_output_type(output_type: str):
    rows = task_table.tasks_with_output_type(output_type)
    if not rows:
        raise ValueError(f"output_type {output_type!r} is not in the task table "
                         f"(known: {', '.join(task_table.OUTPUT_TYPES)})")
    return rows[0]


def interleave_text_speech(text: torch.Tensor, speech: torch.Tensor) -> torch.Tensor:
    """Streaming layout: 6 text ids, 18 speech ids, 6 text, 18 speech, ...
    until the text runs out, then the remaining speech ids. (Upstream's older
    variant added a 999 marker after the text; the trained one has none.)"""
    parts, s = [], 0
    for t in range(0, len(text), STREAM_TEXT_CHUNK):
        parts += [text[t:t + STREAM_TEXT_CHUNK], speech[s:s + STREAM_SPEECH_CHUNK]]
        s += STREAM_SPEECH_CHUNK
    parts.append(speech[s:])
    return torch.cat(parts)


def _get(batch, name, default=None):
    if isinstance(batch, dict):
        return batch.get(name, default)
    return getattr(batch, name, default)


def _length_mask(lengths: torch.Tensor, width: int) -> torch.Tensor:
    return torch.arange(width, device=lengths.device)[None, :] < lengths[:, None]


class OsumEChat(nn.Module):
    def __init__(self, encoder: nn.Module, llm: nn.Module, *, encoder_dim: int, speech_token_num: int,
                 downsample_rate: int = 4, adapter_type: str = "osum_echat", lora: Optional[dict] = None):
        super().__init__()
        hidden = llm.config.hidden_size
        # registration order matters: it fixes state-dict order and which
        # alias named_parameters() reports for the tied embedding
        self.encoder = encoder
        self.ln_speech = nn.LayerNorm(encoder_dim)  # upstream: in the checkpoint, unused
        self.speech_transformer = build_adapter_transformer(encoder_dim) if adapter_type == "osum_echat" else None
        self.llama_model = llm
        self.lora = False
        self.history_cache = SpeechEmbedCache()  # earlier turns' encoder outputs, at inference
        if lora is not None:
            self.add_lora(lora)
        if adapter_type == "osum_echat":
            self.down_sample_2 = build_downsampler(downsample_rate, encoder_dim)
            self.speech_llama_proj = nn.Linear(encoder_dim, hidden)
        elif adapter_type == "osum_echat2":
            self.down_sample_2 = BatchNormDownsampler(encoder_dim, hidden)
        else:
            raise ValueError(f"adapter_type {adapter_type!r}: expected osum_echat or osum_echat2")
        base = self.base_llm()
        self.embed_tokens = base.model.embed_tokens  # aliases, saved under both names as upstream
        self.lm_head = base.lm_head
        self.llm_vocab_size = self.lm_head.weight.shape[0]
        self.speech_token_num = speech_token_num
        if speech_token_num <= 0:
            raise ValueError("speech_token_num must be > 0 (4097 for the released model)")
        # rows [0, N) speech codes, N = speech bos, N + 1 = speech eos
        self.speech_token_emded = nn.Embedding(speech_token_num + 2, hidden)
        self.speech_head = nn.Linear(hidden, speech_token_num)
        self.tokenizer = None
        self.loss_chunk_size: Optional[int] = 256
        self._text_cache: dict = {}

    # ---------------------------------------------------------------- setup
    def add_lora(self, lora: dict) -> None:
        """Wrap the LLM in PEFT LoRA (which freezes the base LLM). The wrapper
        keeps the `llama_model` slot, so state-dict order is unchanged."""
        from peft import LoraConfig, TaskType, get_peft_model
        self.llama_model = get_peft_model(self.llama_model, LoraConfig(task_type=TaskType.CAUSAL_LM, **lora))
        self.lora = True

    def base_llm(self):
        """The Qwen2ForCausalLM (under the LoRA wrapper when there is one)."""
        return self.llama_model.get_base_model() if self.lora else self.llama_model

    def enable_llm_gradient_checkpointing(self) -> None:
        """Recompute LLM layers in backward (the encoder's switch is
        encoder_conf.gradient_checkpointing)."""
        llm = self.base_llm()
        enable = getattr(llm, "activation_checkpointing_enable", None) or llm.gradient_checkpointing_enable
        enable()

    def set_tokenizer(self, tokenizer) -> None:
        from osum_echat.tokenizer import TextIds
        self.tokenizer = tokenizer
        self.text_ids = TextIds.from_tokenizer(tokenizer)
        self._text_cache = {}

    @property
    def device(self) -> torch.device:
        return self.speech_head.weight.device

    def _text(self, text: str, special: bool = True) -> torch.Tensor:
        """Token ids of a fixed string (cached)."""
        if self.tokenizer is None:
            raise RuntimeError("the model has no tokenizer; build it with build_model(config) "
                               "on a real device or call model.set_tokenizer(tok)")
        key = (text, special)
        if key not in self._text_cache:
            ids = self.tokenizer(text, add_special_tokens=special)["input_ids"]
            self._text_cache[key] = torch.tensor(ids, dtype=torch.long)
        return self._text_cache[key].to(self.device)

    def _embed_dtype(self):
        return self.embed_tokens.weight.dtype

    # -------------------------------------------------------------- speech in
    def embed_speech(self, feats: torch.Tensor, feats_lengths: torch.Tensor):
        """(B, T, 80) log-mel -> (B, T', D) LLM-width embeds and valid mask (B, T')."""
        feats = feats.to(next(self.encoder.parameters()).dtype)  # float32 features into a bf16/fp16 model
        enc, mask = self.encoder(feats, feats_lengths)
        x, mask = self.down_sample_2(enc, mask)
        if self.speech_transformer is not None:
            x, mask = self.speech_transformer(x, mask.sum(-1))
            x = self.speech_llama_proj(x)
        return x.to(self._embed_dtype()), mask

    def _speech_code_embed(self, code: int, batch_size: int) -> torch.Tensor:
        ids = torch.full((batch_size, 1), code, dtype=torch.long, device=self.device)
        return self.speech_token_emded(ids)

    # ------------------------------------------------------------- segments
    def _fixed_text_segment(self, text: str, batch_size: int) -> Segment:
        ids = self._text(text).unsqueeze(0).expand(batch_size, -1)
        return Segment(self.embed_tokens(ids), torch.ones_like(ids, dtype=torch.bool),
                       torch.full_like(ids, IGNORE_ID))

    def _prompt_segment(self, prompt: torch.Tensor, lengths: torch.Tensor) -> Segment:
        mask = _length_mask(lengths, prompt.size(1))
        ids = prompt.masked_fill(~mask, self.text_ids.eos)  # upstream pads the prompt with eos
        return Segment(self.embed_tokens(ids), mask, torch.full_like(ids, IGNORE_ID))

    def _speech_input_segment(self, feats, lengths) -> Segment:
        embeds, mask = self.embed_speech(feats, lengths)
        b = embeds.size(0)
        # the eos row goes after the padding, as upstream appends it
        embeds = torch.cat([self._speech_code_embed(self.speech_token_num, b).to(embeds.dtype), embeds,
                            self._speech_code_embed(self.speech_token_num + 1, b).to(embeds.dtype)], 1)
        ones = torch.ones(b, 1, dtype=torch.bool, device=mask.device)
        mask = torch.cat([ones, mask, ones], 1)
        return Segment(embeds, mask, torch.full(mask.shape, IGNORE_ID, device=mask.device))

    def _text_input_segment(self, target, lengths) -> Segment:
        """Text-in tasks feed the target text minus its eos (width unchanged)."""
        mask = _length_mask(lengths - 1, target.size(1))
        ids = target.masked_fill(~mask, 0)
        return Segment(self.embed_tokens(ids), mask, torch.full_like(ids, IGNORE_ID))

    def _text_label_segment(self, target, lengths) -> Segment:
        # "&&" labels are holes: masked for attention, dropped from the loss.
        # upstream quirk: padding (and holes) stay inside the sequence, so in a
        # batch the first speech target of an item with shorter text is
        # predicted from a padded position, not from its last text label.
        mask = _length_mask(lengths, target.size(1)) & (target != self.text_ids.unk_tag)
        ids = target.masked_fill(~mask, 0)
        return Segment(self.embed_tokens(ids), mask, ids.masked_fill(~mask, IGNORE_ID))

    def _speech_label_segment(self, tokens, lengths) -> Segment:
        mask = _length_mask(lengths, tokens.size(1))
        ids = tokens.masked_fill(~mask, 0)
        target = (ids + self.llm_vocab_size).masked_fill(~mask, IGNORE_ID)
        return Segment(self.speech_token_emded(ids).to(self._embed_dtype()), mask, target)

    def embed_ids(self, ids: torch.Tensor) -> torch.Tensor:
        """Embeds ids < vocab with the text table, the rest with the speech table."""
        is_speech = ids >= self.llm_vocab_size
        text = self.embed_tokens(ids.masked_fill(is_speech, 0))
        speech = self.speech_token_emded((ids - self.llm_vocab_size).clamp(min=0)).to(text.dtype)
        return torch.where(is_speech[..., None], speech, text)

    def _streaming_segment(self, target, lengths, tokens, token_lengths, keys) -> Segment:
        rows = []
        for i in range(target.size(0)):
            n_text, n_speech = int(lengths[i]), int(token_lengths[i])
            if task_table.STREAM_MIN_SPEECH_PER_TEXT * n_text > n_speech:
                raise ValueError(f"{keys[i] if keys else i}: streaming needs at least 3 speech tokens per "
                                 f"text token ({n_text} text, {n_speech} speech); drop or fix this sample")
            rows.append(interleave_text_speech(target[i, :n_text], tokens[i, :n_speech] + self.llm_vocab_size))
        ids = pad_sequence(rows, batch_first=True, padding_value=0)
        mask = _length_mask(torch.tensor([len(r) for r in rows], device=ids.device), ids.size(1))
        return Segment(self.embed_ids(ids), mask, ids.masked_fill(~mask, IGNORE_ID))

    def _history_speech(self, feat) -> torch.Tensor:
        """One earlier turn's speech embeds (T', D); at inference from the cache when seen before."""
        feat = torch.as_tensor(feat, device=self.device)
        cached = not torch.is_grad_enabled() and not self.training
        key = self.history_cache.key(feat) if cached else None
        embeds = self.history_cache.get(key) if cached else None
        if embeds is None:
            embeds = self.embed_speech(feat[None], torch.tensor([feat.size(0)], device=self.device))[0][0]
            if cached:
                self.history_cache.put(key, embeds)
        return embeds

    def _history_segment(self, history: list) -> Optional[Segment]:
        """Previous turns: [user_start] wav <|im_end|> assistant-start text [speech] <|im_end|>, ...,
        then one user_start; padded per batch. None when no item has history."""
        if not history or all(len(h) == 0 for h in history):
            return None
        user_start = self.embed_tokens(self._text(task_table.USER_START))
        turn_end = self.embed_tokens(self._text(task_table.TURN_END))
        assistant_start = self.embed_tokens(self._text(task_table.ASSISTANT_START))
        rows = []
        for turns in history:
            parts = []
            for turn in turns:
                if parts:
                    parts.append(user_start)
                parts += [self._history_speech(turn["wav"]), turn_end, assistant_start, self.embed_tokens(self._text(turn["txt"], False))]
                codes = turn.get("speech_token")
                if codes is not None and len(codes) > 0:
                    codes = torch.as_tensor(codes, dtype=torch.long, device=self.device)
                    parts.append(self.speech_token_emded(codes).to(self._embed_dtype()))
                parts.append(turn_end)
            # upstream quirk: every item ends with a user_start, also an item
            # without history in a batch where others have some
            parts.append(user_start)
            rows.append(torch.cat(parts))
        embeds = pad_sequence(rows, batch_first=True)
        mask = _length_mask(torch.tensor([len(r) for r in rows], device=self.device), embeds.size(1))
        return Segment(embeds, mask, torch.full(mask.shape, IGNORE_ID, device=self.device))

    # ------------------------------------------------------------- assembly
    def assemble(self, batch, with_output: bool = True) -> Assembled:
        """LLM inputs for a batch; `with_output=False` stops after the
        assistant start (the prompt a decoder continues from)."""
        output_type = _get(batch, "output_type")
        spec = spec_for_output_type(output_type)
        dev = self.device
        target = _get(batch, "target")
        target = target.to(dev) if target is not None else None
        target_lengths = _get(batch, "target_lengths")
        target_lengths = target_lengths.to(dev).long() if target_lengths is not None else None
        prompt = _get(batch, "prompt")
        if spec.speech_input:
            feats = _get(batch, "feats").to(dev)
            b = feats.size(0)
        else:  # text in: the target text (TTS) or the question prompt (text chat)
            b = (target if target is not None else prompt).size(0)

        segments = [self._fixed_text_segment(spec.system_text, b)]
        if spec.uses_prompt and prompt is not None:
            segments.append(self._prompt_segment(prompt.to(dev), _get(batch, "prompt_lengths").to(dev).long()))
        if spec.embeds_history:
            history = self._history_segment(_get(batch, "history") or [])
            if history is not None:
                segments.append(history)
        if spec.speech_input:
            segments.append(self._speech_input_segment(feats, _get(batch, "feats_lengths").to(dev)))
        elif spec.speech_output:
            segments.append(self._text_input_segment(target, target_lengths))
        segments.append(self._fixed_text_segment(task_table.ASSISTANT_START, b))

        if with_output:
            if spec.speech_output:
                tokens = _get(batch, "speech_tokens").to(dev)
                token_lengths = _get(batch, "speech_tokens_length").to(dev).long()
            if spec.streaming:
                segments.append(self._streaming_segment(target, target_lengths, tokens, token_lengths,
                                                        _get(batch, "keys")))
            else:
                if spec.text_target:
                    segments.append(self._text_label_segment(target, target_lengths))
                if spec.speech_output:
                    segments.append(self._speech_label_segment(tokens, token_lengths))

        dtype = self._embed_dtype()
        embeds = torch.cat([s.embeds.to(dtype) for s in segments], 1)
        mask = torch.cat([s.mask for s in segments], 1)
        target = torch.cat([s.target.to(dev) for s in segments], 1)
        position_ids = mask.long().cumsum(-1) - 1
        position_ids.masked_fill_(~mask, 1)
        return Assembled(embeds, mask, position_ids, target)

    # -------------------------------------------------------------- forward
    def loss_heads(self, speech_output: bool):
        heads = [(self.lm_head.weight, self.lm_head.bias)]
        if speech_output:
            heads.append((self.speech_head.weight, self.speech_head.bias))
        return heads

    def forward(self, batch) -> dict:
        spec = spec_for_output_type(_get(batch, "output_type"))
        x = self.assemble(batch)
        out = self.base_llm().model(inputs_embeds=x.inputs_embeds, attention_mask=x.attention_mask.long(),
                                    position_ids=x.position_ids, use_cache=False)
        # text-only types: the LLM's own loss over the text vocabulary;
        # the others: one CE over concatenated text + speech logits
        result = shifted_loss(out.last_hidden_state, x.target, self.loss_heads(spec.speech_output),
                              chunk_size=self.loss_chunk_size)
        result["output_type"] = spec.output_type
        return result
