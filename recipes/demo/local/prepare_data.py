"""Prepare the offline CPU demo data for the three OSUM-EChat stages.

Speech is synthesised with espeak-ng (Debian package `espeak-ng`) from a small
fixed script, so the demo needs no download. Each utterance gets text, gender,
age and emotion labels from the voice settings that produced it, and speech
tokens from the *demo* speech tokenizer (see demo_speech_tokenizer.py: a stand
in for the 25 Hz CosyVoice tokenizer, not compatible with it).

Written under --out_dir (default exp/demo/data):
  wav/KEY.wav                       16 kHz mono 16-bit
  lists/NAME.jsonl                  upstream "raw" lists (key, txt, wav, extra, task)
  shards/NAME/shards_000000000.tar  upstream WeNet shards of the same samples
  shards/NAME/shards_list.txt
  lists/heldout_{s1,echat}.jsonl    held out of training: new sentences, a new speaker, new
                                    empathy questions (raw lists only)
  conf/stageN_{s2t,t2s,s2s,t2t,cv}.yaml  data yamls (name: {path, weight}) per stage; stage 3
                                    once per think style: stage3_{tag,language}_think_*.yaml
--yamls_only rewrites the data yamls of existing data (no synthesis); --held_out_only writes only
the held-out lists (for a demo folder prepared before they existed).
"""
import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile

import soundfile as sf
import soxr

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from demo_speech_tokenizer import SAMPLE_RATE, DemoSpeechTokenizer  # noqa: E402

# Short sentences with distinct openings: the demo ASR task.
SENTENCES = [
    "the cat sleeps on the warm mat",
    "green apples fall from the old tree",
    "my brother plays the piano every night",
    "please close the window before you leave",
    "seven boats sail across the quiet lake",
    "rain is coming so take an umbrella",
    "she reads a book about distant stars",
    "our train leaves at nine in the morning",
    "fresh bread smells good in the kitchen",
    "we planted tomatoes in the garden",
    "a small dog barks at the red car",
    "turn left after the big bridge",
    "coffee keeps me awake at work",
    "children laugh in the sunny park",
    "he forgot his keys at the office",
    "winter nights are long and cold",
]

# Question -> answer pairs: the demo spoken and written dialogue tasks.
DIALOGUES = [
    ("what color is the sky", "the sky is blue on a clear day"),
    ("how many legs does a spider have", "a spider has eight legs"),
    ("what do cows drink", "cows drink water"),
    ("where does the sun rise", "the sun rises in the east"),
    ("what is two plus three", "two plus three is five"),
    ("which animal says meow", "a cat says meow"),
    ("what do bees make", "bees make honey"),
    ("when do owls hunt", "owls hunt at night"),
]

# Empathy: the same question asked happily or sadly gets a different answer.
EMPATHY_QUESTIONS = [
    "i got a new job today",
    "my best friend moved away",
    "we are going to the beach",
    "i failed my driving test",
]
EMPATHY_ANSWERS = {
    "<HAPPY>": "that is wonderful news i am so happy for you",
    "<SAD>": "i am sorry to hear that i am here for you",
}

# espeak-ng voice settings -> paralinguistic labels.
SPEAKERS = {
    "man": dict(voice="en-us+m3", pitch=40, speed=165, gender="<MALE>", age="<ADULT>"),
    "woman": dict(voice="en-us+f3", pitch=55, speed=165, gender="<FEMALE>", age="<ADULT>"),
    "child": dict(voice="en-us+f4", pitch=95, speed=185, gender="<FEMALE>", age="<CHILD>"),
}
EMOTIONS = {"<NEUTRAL>": (0, 0), "<HAPPY>": (20, 35), "<SAD>": (-20, -45)}  # pitch, speed deltas
ASSISTANT = "woman"

# Held out of every training list: new sentences, a new speaker (a male adult voice unlike "man",
# so its labels are classes the model knows) and new empathy questions. Stage 4 scores stage 1 on
# them next to its training figures; stage 5 evaluates the stage-3 checkpoints on them.
HELD_OUT_SENTENCES = [
    "the little bird sings at dawn",
    "bring a warm coat for the trip",
    "my sister paints the blue door",
]
HELD_OUT_SPEAKERS = {"man2": dict(voice="en-us+m1", pitch=25, speed=150, gender="<MALE>", age="<ADULT>")}
HELD_OUT_QUESTIONS = ["we won the football match", "my cat is very ill"]


def check_espeak():
    if shutil.which("espeak-ng") is None:
        sys.exit("espeak-ng not found: the demo synthesises its speech with it.\n"
                 "Install it with: apt-get update && apt-get install -y espeak-ng\n"
                 "(bash recipes/demo/run.sh does this itself when run as root.)")


def synthesise(text, speaker, emotion, path):
    spk = SPEAKERS.get(speaker) or HELD_OUT_SPEAKERS[speaker]
    dp, ds = EMOTIONS[emotion]
    with tempfile.NamedTemporaryFile(suffix=".wav") as tmp:
        subprocess.run(["espeak-ng", "-v", spk["voice"], "-p", str(spk["pitch"] + dp),
                        "-s", str(spk["speed"] + ds), "-w", tmp.name, text],
                       check=True, capture_output=True)
        audio, sr = sf.read(tmp.name, dtype="float32")
    audio = soxr.resample(audio, sr, SAMPLE_RATE) if sr != SAMPLE_RATE else audio
    sf.write(path, audio, SAMPLE_RATE, subtype="PCM_16")
    return audio


class Builder:
    def __init__(self, out_dir, codebook_size):
        self.out_dir = os.path.abspath(out_dir)
        self.wav_dir = os.path.join(self.out_dir, "wav")
        os.makedirs(self.wav_dir, exist_ok=True)
        self.tokenizer = DemoSpeechTokenizer(codebook_size)
        self.cache = {}

    def utterance(self, text, speaker, emotion="<NEUTRAL>"):
        """Synthesise once; returns (wav path, duration s, speech tokens)."""
        key = f"{speaker}_{emotion.strip('<>').lower()}_{'_'.join(text.split())}"
        if key not in self.cache:
            path = os.path.join(self.wav_dir, key[:120] + ".wav")
            audio = synthesise(text, speaker, emotion, path)
            self.cache[key] = (path, len(audio) / SAMPLE_RATE, self.tokenizer(audio, SAMPLE_RATE))
        return self.cache[key]


def sample(key, txt, wav, task, speaker, emotion="<NEUTRAL>", duration=0.0, **extra):
    spk = SPEAKERS.get(speaker) or HELD_OUT_SPEAKERS[speaker]
    extra = dict(dataset="espeak_demo", gender=spk["gender"], age=spk["age"],
                 emotion=emotion, duration=round(duration, 3), **extra)
    return dict(key=key, txt=txt, wav=wav, extra=extra, task=task,
                lang="en", speaker=speaker, gender=spk["gender"], emotion=emotion)


def stage1_samples(b):
    """Understanding: ASR and ASR+paralinguistic tags on every speaker."""
    asr, asr_p = [], []
    for i, text in enumerate(SENTENCES):
        for spk in SPEAKERS:
            wav, dur, _ = b.utterance(text, spk)
            base = f"s1_{spk}_{i:03d}"
            asr.append(sample(base + "_asr", text, wav, "<TRANSCRIBE>", spk, duration=dur))
            asr_p.append(sample(base + "_gender", text + SPEAKERS[spk]["gender"], wav,
                                "<TRANSCRIBE> <GENDER>", spk, duration=dur))
            asr_p.append(sample(base + "_age", text + SPEAKERS[spk]["age"], wav,
                                "<TRANSCRIBE> <AGE>", spk, duration=dur))
    return {"s1_asr": asr, "s1_asr_p": asr_p}


def stage2_samples(b):
    """Generation: TTS, spoken dialogue (S2S) and written dialogue (T2T)."""
    tts, s2s, t2t = [], [], []
    for i, text in enumerate(SENTENCES):
        wav, dur, tokens = b.utterance(text, ASSISTANT)
        tts.append(sample(f"s2_tts_{i:03d}", text, wav, "<TEXT2TOKEN>", ASSISTANT,
                          duration=dur, speech_token=tokens))
    for i, (question, answer) in enumerate(DIALOGUES):
        a_wav, _, a_tokens = b.utterance(answer, ASSISTANT)
        for spk in ("man", "child"):
            q_wav, q_dur, _ = b.utterance(question, spk)
            s2s.append(sample(f"s2_s2s_{spk}_{i:03d}", answer, q_wav, "<S2TCHAT> <TEXT2TOKEN>",
                              spk, duration=q_dur, question=question, speech_token=a_tokens,
                              a_wav_path=a_wav))
        t2t.append(sample(f"s2_t2t_{i:03d}", answer, "", "<TEXT2TEXT>", ASSISTANT,
                          question=question))
    return {"s2_tts": tts, "s2_s2s": s2s, "s2_t2t": t2t}


def think_text(spk, emotion, natural):
    gender, age = SPEAKERS[spk]["gender"], SPEAKERS[spk]["age"]
    if not natural:
        return f"{gender}{age}{emotion}"
    who = {"<CHILD>": "child", "<ADULT>": "adult"}[age]
    sex = {"<MALE>": "man", "<FEMALE>": "woman"}[gender] if age == "<ADULT>" else who
    mood = {"<HAPPY>": "happy so i share the joy", "<SAD>": "sad so i comfort them"}[emotion]
    return f"the speaker is a {sex} who sounds {mood}"


def stage3_samples(b):
    """Empathy: think-CoT spoken replies (S2S) and text replies (S2T), tag and NL variants."""
    out = {"s3_s2s_think_tag": [], "s3_s2s_think_nl": [], "s3_s2t_think_tag": [],
           "s3_s2t_think_nl": []}
    for i, question in enumerate(EMPATHY_QUESTIONS):
        for emotion, answer in EMPATHY_ANSWERS.items():
            a_wav, _, a_tokens = b.utterance(answer, ASSISTANT)
            for spk in ("man", "woman"):
                q_wav, q_dur, _ = b.utterance(question, spk, emotion)
                for variant, natural in (("tag", False), ("nl", True)):
                    think = think_text(spk, emotion, natural)
                    key = f"s3_{variant}_{spk}_{emotion.strip('<>').lower()}_{i:03d}"
                    common = dict(duration=q_dur, question=question, think_str=think)
                    out[f"s3_s2s_think_{variant}"].append(sample(
                        key + "_s2s", answer, q_wav, "<S2TCHAT> <TEXT2TOKEN> <THINK>", spk,
                        emotion, speech_token=a_tokens, a_wav_path=a_wav, **common))
                    out[f"s3_s2t_think_{variant}"].append(sample(
                        key + "_s2t", answer, q_wav, "<S2TCHAT> <THINKER>", spk, emotion,
                        **common))
    return out


def held_out_samples(b):
    """Held-out lists (raw only, never in a data yaml): stage-1 ASR + gender/age on new sentences by
    the new speaker and a trained one; EChat-eval-style empathy items (new questions, new speaker)."""
    s1 = []
    for i, text in enumerate(HELD_OUT_SENTENCES):
        for spk in (*HELD_OUT_SPEAKERS, "woman"):
            wav, dur, _ = b.utterance(text, spk)
            labels = SPEAKERS.get(spk) or HELD_OUT_SPEAKERS[spk]
            base = f"heldout_{spk}_{i:03d}"
            s1.append(sample(base + "_asr", text, wav, "<TRANSCRIBE>", spk, duration=dur))
            s1.append(sample(base + "_gender", text + labels["gender"], wav, "<TRANSCRIBE> <GENDER>", spk, duration=dur))
            s1.append(sample(base + "_age", text + labels["age"], wav, "<TRANSCRIBE> <AGE>", spk, duration=dur))
    echat = []
    for i, question in enumerate(HELD_OUT_QUESTIONS):
        for emotion, answer in EMPATHY_ANSWERS.items():
            for spk in HELD_OUT_SPEAKERS:
                wav, dur, _ = b.utterance(question, spk, emotion)
                echat.append(sample(f"heldout_echat_{spk}_{emotion.strip('<>').lower()}_{i:03d}", answer, wav,
                                    "<S2TCHAT> <TEXT2TOKEN> <THINK>", spk, emotion, duration=dur,
                                    question=question, dimension="emotion"))
    return {"heldout_s1": s1, "heldout_echat": echat}


def write_held_out(b):
    os.makedirs(os.path.join(b.out_dir, "lists"), exist_ok=True)
    for name, samples in held_out_samples(b).items():
        write_raw(os.path.join(b.out_dir, "lists", name + ".jsonl"), samples)
        print(f"{name}: {len(samples)} held-out samples")


def raw_line(s):
    return json.dumps({k: s[k] for k in ("key", "txt", "wav", "extra", "task")},
                      ensure_ascii=False)


def write_raw(path, samples):
    with open(path + ".tmp", "w", encoding="utf8") as f:
        for s in samples:
            f.write(raw_line(s) + "\n")
    os.replace(path + ".tmp", path)


def add_member(tar, name, data: bytes):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def write_shard(path, samples):
    """One WeNet shard tar: KEY.wav plus one text member per label, as upstream."""
    with tarfile.open(path + ".tmp", "w") as tar:
        for s in samples:
            key = s["key"]
            if s["wav"]:
                with open(s["wav"], "rb") as f:
                    add_member(tar, key + ".wav", f.read())
            for field in ("txt", "task", "lang", "speaker", "emotion", "gender"):
                add_member(tar, f"{key}.{field}", str(s[field]).encode("utf8"))
            add_member(tar, key + ".duration", str(s["extra"]["duration"]).encode())
            add_member(tar, key + ".extra", json.dumps(s["extra"], ensure_ascii=False).encode("utf8"))
    os.replace(path + ".tmp", path)


# stage -> direction (upstream train.sh's four data yamls) -> list names and weights;
# "cv" lists what each stage is evaluated on (stage 1: the ASR targets of its training speech)
STAGE_DATA = {
    1: {"s2t": {"s1_asr": 1, "s1_asr_p": 1}, "cv": {"s1_asr": 1}},
    2: {"t2s": {"s2_tts": 1}, "s2s": {"s2_s2s": 2}, "t2t": {"s2_t2t": 2},
        "cv": {"s2_tts": 1, "s2_s2s": 1, "s2_t2t": 1}},
    # upstream releases one stage-3 checkpoint per think style (tag_think_final.pt,
    # language_think_final.pt): trained together, one task tag would pick a style at random
    "3_tag_think": {"s2s": {"s3_s2s_think_tag": 1}, "s2t": {"s3_s2t_think_tag": 1},
                    "cv": {"s3_s2s_think_tag": 1, "s3_s2t_think_tag": 1}},
    "3_language_think": {"s2s": {"s3_s2s_think_nl": 1}, "s2t": {"s3_s2t_think_nl": 1},
                         "cv": {"s3_s2s_think_nl": 1, "s3_s2t_think_nl": 1}},
}


def write_data_yamls(out_dir, data_type):
    conf_dir = os.path.join(out_dir, "conf")
    os.makedirs(conf_dir, exist_ok=True)
    for stage, directions in STAGE_DATA.items():
        for direction in ("s2t", "t2s", "s2s", "t2t", "cv"):
            lines = []
            for name, weight in directions.get(direction, {}).items():
                path = (os.path.join(out_dir, "shards", name, "shards_list.txt")
                        if data_type == "shard" else os.path.join(out_dir, "lists", name + ".jsonl"))
                lines += [f"{name}:", f"  path: {path}", f"  weight: {weight}"]
            with open(os.path.join(conf_dir, f"stage{stage}_{direction}.yaml"), "w") as f:
                f.write("\n".join(lines) + "\n" if lines else "{}\n")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out_dir", default="exp/demo/data")
    parser.add_argument("--codebook_size", type=int,
                        help="demo speech tokens lie in [0, codebook_size); use speech_token_num - 1")
    parser.add_argument("--data_type", choices=["raw", "shard"], default="shard",
                        help="which format the stage data yamls point at (both are written)")
    parser.add_argument("--yamls_only", action="store_true", help="only rewrite the data yamls")
    parser.add_argument("--held_out_only", action="store_true",
                        help="only synthesise the held-out lists (lists/heldout_*.jsonl)")
    args = parser.parse_args()
    if args.yamls_only:
        write_data_yamls(args.out_dir, args.data_type)
        return
    if args.codebook_size is None:
        parser.error("--codebook_size is required")
    check_espeak()
    b = Builder(args.out_dir, args.codebook_size)
    if args.held_out_only:
        write_held_out(b)
        return
    lists = {**stage1_samples(b), **stage2_samples(b), **stage3_samples(b)}
    os.makedirs(os.path.join(b.out_dir, "lists"), exist_ok=True)
    for name, samples in lists.items():
        write_raw(os.path.join(b.out_dir, "lists", name + ".jsonl"), samples)
        shard_dir = os.path.join(b.out_dir, "shards", name)
        os.makedirs(shard_dir, exist_ok=True)
        tar_path = os.path.join(shard_dir, "shards_000000000.tar")
        write_shard(tar_path, samples)
        with open(os.path.join(shard_dir, "shards_list.txt"), "w") as f:
            f.write(tar_path + "\n")
        print(f"{name}: {len(samples)} samples")
    write_data_yamls(b.out_dir, args.data_type)
    write_held_out(b)
    print(f"demo data ready under {b.out_dir} ({len(b.cache)} synthesised utterances)")


if __name__ == "__main__":
    main()
