"""Every config key, nested ones included: upstream's ct_config.yaml schema (and the keys its code
reads), plus the few this project adds (marked "added").

A leaf is a tuple of accepted types (ANY: any value); a dict is a mapping that may hold exactly those
keys (an empty mapping, written as nothing in YAML, is null and fine). `NOT_SUPPORTED` names keys
upstream reads that this project does not implement, `UNSUPPORTED_VALUES` values of known keys that
ask for something neither upstream nor this project does; both raise a ConfigError that says why.
"""
from __future__ import annotations

NUM = (int, float)
BOOL = (bool,)
INT = (int,)
STR = (str,)
ANY = ()  # any value

DIRECTIONS = ("s2t", "t2s", "s2s", "t2t")
ONLY = {f"only_{d}": BOOL for d in DIRECTIONS}
CONVERSION = {"enable": BOOL, "rate": NUM}

DATASET_CONF = {
    "expand_dialogue_prefix": {"enable": BOOL, "max_turn": INT, "min_turn": INT, "keep_final": BOOL,
                               "resample_history_like_upstream": BOOL},  # added: see data/tokenize.py
    "speech_token_num": INT,
    "batch_conf": {"batch_size": INT, "batch_type": STR, "max_frames_in_batch": INT, "max_seq_in_batch": INT},
    "feats_type": STR,
    "filter_conf": {
        "max_length": NUM, "min_length": NUM, "token_max_length": NUM, "token_min_length": NUM,
        "max_seq_len": NUM,
        "filter_no_extra_info": BOOL,
        "other_filter_conf": {**ONLY, "fiter_txt_is_None": BOOL},
        "banned_words": (list,),  # added: the other-assistant word list (labels.OTHER_ASSISTANT_NAMES)
    },
    "log_mel_spectrogram_conf": {"hop_length": INT, "n_fft": INT, "num_mel_bins": INT, "padding": INT},
    "fbank_conf": {"num_mel_bins": INT, "frame_length": NUM, "frame_shift": NUM, "dither": NUM},
    # upstream carries it from WeNet's Whisper-tokenizer config and never reads it: see data/tokenize.py
    "language_conf": {"limited_langs": (list,)},
    "resample_conf": {"resample_rate": INT},
    "shuffle": BOOL,
    "shuffle_conf": {"shuffle_size": INT},
    "sort": BOOL,
    "sort_conf": {"sort_size": INT},
    "spec_aug": BOOL,
    "spec_aug_conf": {"max_f": INT, "max_t": INT, "num_f_mask": INT, "num_t_mask": INT, "max_w": INT},
    "spec_sub": BOOL,
    "spec_sub_conf": {"max_t": INT, "num_t_sub": INT},
    "spec_trim": BOOL,
    "spec_trim_conf": {"max_t": INT},
    "speed_perturb": BOOL,
    "eod_id": INT,
    "split_num": INT,
    "multi_num": INT,
    "prompt_conf_path": STR,
    "data_recover": BOOL,
    "data_recover_conf": {"start_idx": INT},
    "other_tokenze_conf": {
        "only_info": ONLY,
        "use_50_per_change_if_only_X": BOOL,
        "use_s2s_streaming_random": CONVERSION,
        "natural_language_convert": CONVERSION,
        "use_s2s_convert_s2t": CONVERSION,
        "use_streaming_tts": CONVERSION,
        "use_think_mode": CONVERSION,
    },
    "other_filter_conf": {"fiter_txt_is_None": BOOL},
    "mix_weights": {d: NUM for d in DIRECTIONS},  # added: four-way mixing weights
    "think_mode": STR,  # added: as the top-level key
}

ENCODER_CONF = {
    "activation_type": STR, "attention_dropout_rate": NUM, "attention_heads": INT, "dropout_rate": NUM,
    "gradient_checkpointing": BOOL, "input_layer": STR, "key_bias": BOOL, "linear_units": INT,
    "normalize_before": BOOL, "num_blocks": INT, "output_size": INT, "pos_enc_layer_type": STR,
    "positional_dropout_rate": NUM, "static_chunk_size": INT, "use_dynamic_chunk": BOOL,
    "use_dynamic_left_chunk": BOOL,
}

# Options train.py records in the train.yaml it writes, and the trainer's own (all added).
TRAIN_CONF = {
    "max_consecutive_nan": INT, "cv_at_start": BOOL, "train_engine": STR, "world_size": INT, "use_amp": BOOL,
    "save_states": STR, "data_type": STR, "checkpoint": (str, type(None)), "device": STR,
    "dtype": (str, type(None)),
}

SCHEMA = {
    "model": STR,
    "llm_path": STR,
    "downsample_rate": INT,
    "adapter_type": STR,
    "if_instruct": BOOL,
    "input_dim": INT,
    "tokenizer": STR,
    "tokenizer_conf": {"llm_path": STR},
    "use_lora": BOOL,
    "lora_alpha": NUM,
    "lora_rank": INT,
    "lora_dropout": NUM,
    "speech_token_num": INT,
    "fire_module": STR,
    "grad_clip": NUM,
    "accum_grad": INT,
    "log_interval": INT,
    "save_interval": INT,
    "max_epoch": INT,
    "init_step": (bool, int),
    "optim": STR,
    "optim_conf": {"lr": NUM, "betas": (list,), "eps": NUM, "weight_decay": NUM, "amsgrad": BOOL},
    "scheduler": STR,
    "scheduler_conf": {"warmup_steps": NUM},
    "dataset": STR,
    "dataset_conf": DATASET_CONF,
    "encoder": STR,
    "encoder_conf": ENCODER_CONF,
    "data_for_showing": ANY,
    # added by this project
    "seed": INT,  # base seed of every random generator
    "device": STR,  # cuda | npu | cpu; empty = detect
    "think_mode": STR,  # "tag" or "language" chain-of-thought wrapping
    "max_steps": INT,  # stop after this many optimizer steps (demo, smoke runs)
    "keep_checkpoint_max": INT,  # newest N step checkpoints kept
    "train_conf": TRAIN_CONF,
    "llm_gradient_checkpointing": BOOL,  # recompute LLM layers in backward
}

CHOICES = {
    "fire_module": ("link", "encoder", "llm", "link_and_encoder", "link_and_encoder_and_lora", "link_and_lora"),
    "adapter_type": ("osum_echat", "osum_echat2"),
    "think_mode": ("tag", "language"),
    "dataset_conf.think_mode": ("tag", "language"),
    "dataset_conf.feats_type": ("log_mel_spectrogram", "fbank"),
    "dataset_conf.batch_conf.batch_type": ("static", "dynamic"),
}

_FEATS = "the Whisper encoder reads log-mel (feats_type log_mel_spectrogram) or Kaldi fbank"
NOT_SUPPORTED = {
    "dataset_conf.speaker_conf": "speaker-id parsing (WeNet's parse_speaker) is not supported; remove it",
    "dataset_conf.mfcc_conf": f"MFCC features are not supported: {_FEATS}",
    "dataset_conf.filter_conf.min_output_input_ratio":
        "not supported (upstream accepts it but its check is commented out); remove it",
    "dataset_conf.filter_conf.max_output_input_ratio":
        "not supported (upstream accepts it but its check is commented out); remove it",
    "cmvn": "global CMVN is not supported (the Whisper-style encoder reads raw log-mel); remove it",
    "cmvn_conf": "global CMVN is not supported (the Whisper-style encoder reads raw log-mel); remove it",
}

_ONLY_INFO = ("not supported: upstream sets other_tokenze_conf.only_info for its per-direction loaders but "
              "never reads it; to keep one direction set dataset_conf.filter_conf.other_filter_conf.only_{d}")
UNSUPPORTED_VALUES = {
    "dataset_conf.speed_perturb": (True, "speed perturbation is not supported; set it to false"),
    "dataset_conf.other_tokenze_conf.use_s2s_convert_s2t.enable": (
        True, "not supported: upstream enables it for its s2t loader but no upstream processor reads it, "
              "so it converts nothing there either; set it to false"),
    **{f"dataset_conf.other_tokenze_conf.only_info.only_{d}": (True, _ONLY_INFO.format(d=d)) for d in DIRECTIONS},
}


def known_paths(schema: dict = SCHEMA, prefix: str = "") -> list[str]:
    """Every dotted key path of the schema, mappings included."""
    out = []
    for key, sub in schema.items():
        path = f"{prefix}{key}"
        out.append(path)
        if isinstance(sub, dict):
            out += known_paths(sub, path + ".")
    return out
