"""The web demo page (gradio): one loaded model, a conversation per browser tab.

Layout, top to bottom: checkpoint switch (when two are loaded) and task picker (the task table's
tags, another tag may be typed; it starts at a task the selected checkpoint was trained on); user audio (upload or record), text and optional user prompt;
Send and Reset buttons; a status line (errors and notes); the conversation; the think chain and the
answer; the answer's audio (when token2wav is configured); per-turn timings.

Requests run one at a time under a lock (one model); each tab (gradio session) keeps its own
Conversation, so tabs never see each other's history. Bad input (not audio, too long, empty text)
shows one line in the status box and the server keeps serving.
"""

import collections
import dataclasses
import os
import threading
from typing import Optional

from osum_echat import tasks as task_table
from osum_echat.infer.conversation import Conversation
from osum_echat.infer.runtime import HELPER_TASKS, ChatInputError, ChatPipeline
from osum_echat.utils import get_logger

log = get_logger("osum_echat.web")

MAX_SESSIONS = 64  # conversations kept; the least recently used one goes first
TIMING_LABELS = (("encoder", "encoder"), ("llm", "LLM"), ("token2wav", "token2wav"),
                 ("first_audio", "first audio"), ("total", "total"))


@dataclasses.dataclass
class Session:
    conversation: Conversation
    messages: list = dataclasses.field(default_factory=list)  # what the Chatbot shows


def format_timings(timings: dict) -> str:
    return " · ".join(f"{label} {timings[key] * 1000:.0f} ms" for key, label in TIMING_LABELS if key in timings)


class DemoServer:
    """The page's logic without gradio: sessions, the model lock, one turn, reset."""

    def __init__(self, pipe: ChatPipeline, checkpoint_names: Optional[list] = None, max_turns: int = 5,
                 default_tasks: Optional[list] = None):
        """`default_tasks`: per checkpoint, the task the page offers first (one it was trained on, see
        trained_tasks.default_task); default: spoken dialogue."""
        self.pipe = pipe
        self.checkpoint_names = checkpoint_names or []
        self.default_tasks = default_tasks or []
        self.max_turns = max_turns
        self.sessions: "collections.OrderedDict[str, Session]" = collections.OrderedDict()
        self.lock = threading.Lock()

    def session(self, key: str) -> Session:
        if key not in self.sessions:
            self.sessions[key] = Session(Conversation(self.pipe, max_turns=self.max_turns))
            while len(self.sessions) > MAX_SESSIONS:
                self.sessions.popitem(last=False)
        self.sessions.move_to_end(key)
        return self.sessions[key]

    def default_task(self, checkpoint: Optional[str] = None) -> str:
        """The task offered first for this checkpoint (the first one when None or unknown)."""
        i = self.checkpoint_names.index(checkpoint) if checkpoint in self.checkpoint_names else 0
        return self.default_tasks[i] if i < len(self.default_tasks) else HELPER_TASKS["s2s"]

    def reset(self, key: str) -> None:
        self.sessions.pop(key, None)

    def turn(self, key: str, task: str, audio: Optional[str], text: str, prompt: str, checkpoint: Optional[str]):
        """(session, result or None, status line)."""
        session = self.session(key)
        try:
            spec = task_table.TASKS[task_table.resolve_task(task)]
        except task_table.UnknownTaskError as e:
            return session, None, f"error: unknown_task: {e}"
        speech = spec.speech_input
        try:
            with self.lock:
                if checkpoint in self.checkpoint_names and self.pipe.variants is not None:
                    self.pipe.use_variant(self.pipe.variants.names[self.checkpoint_names.index(checkpoint)])
                result = session.conversation.say(wav=audio if speech else None, text=None if speech else text,
                                                  prompt=prompt or None, task=task)
        except ChatInputError as e:
            return session, None, f"error: {e}"
        except Exception as e:  # noqa: BLE001 - the page keeps serving; the log has the traceback
            log.exception("request failed")
            return session, None, f"internal error ({type(e).__name__}): {e}"
        user = f"[audio] {os.path.basename(audio)}" if speech and audio else text
        session.messages += [{"role": "user", "content": f"{user}  [{result.task}]"},
                             {"role": "assistant", "content": result.text or "(empty answer)"}]
        status = "; ".join([f"ok ({result.history_turns} history turn(s) used)"] + result.notes)
        return session, result, status


def build_demo(server: DemoServer, max_file_size: str = "10mb"):
    import gradio as gr

    tags = list(task_table.TASKS)
    with gr.Blocks(title="OSUM-EChat demo") as demo:
        gr.Markdown("## OSUM-EChat\nSpeak or type, pick a task, read the think chain and the answer, "
                    "hear the reply. Each browser tab holds its own conversation.")
        with gr.Row():
            checkpoint = gr.Radio(server.checkpoint_names, value=(server.checkpoint_names or [None])[0],
                                  label="checkpoint", visible=len(server.checkpoint_names) > 1, elem_id="checkpoint")
            first = server.default_task()
            task = gr.Dropdown(tags, value=first, label="task (from the task table; another tag "
                               "may be typed)", allow_custom_value=True, elem_id="task")
        with gr.Row():
            limit = server.pipe.audio_limit(task_table.TASKS[first])
            audio = gr.Audio(sources=["upload", "microphone"], type="filepath",
                             label=f"your speech (≤ {limit:g} s, ≤ {max_file_size})", elem_id="user_audio")
            with gr.Column():
                text = gr.Textbox(label="text (text-input tasks)", elem_id="user_text")
                prompt = gr.Textbox(label="custom user prompt (optional; understanding tasks)", elem_id="prompt")
        with gr.Row():
            send = gr.Button("Send", variant="primary", elem_id="send")
            reset = gr.Button("Reset conversation", elem_id="reset")
        status = gr.Textbox(label="status", interactive=False, elem_id="status")
        chat = gr.Chatbot(label="conversation", elem_id="history", height=260)
        with gr.Row():
            think = gr.Textbox(label="think", interactive=False, lines=3, elem_id="think")
            answer = gr.Textbox(label="answer", interactive=False, lines=3, elem_id="answer")
        answer_audio = gr.Audio(label="answer audio", interactive=False, elem_id="answer_audio")
        timings = gr.Textbox(label="timings (this turn)", interactive=False, elem_id="timings")

        def on_send(checkpoint_name, task_tag, audio_path, text_in, prompt_in, request: gr.Request):
            session, result, line = server.turn(request.session_hash, task_tag, audio_path, text_in, prompt_in,
                                                checkpoint_name)
            if result is None:
                return session.messages, gr.skip(), gr.skip(), gr.skip(), gr.skip(), line
            sound = (result.sample_rate, result.audio.numpy()) if result.audio is not None else None
            return session.messages, result.think, result.text, sound, format_timings(result.timings), line

        def on_reset(request: gr.Request):
            server.reset(request.session_hash)
            return [], "", "", None, "", "conversation reset"

        outputs = [chat, think, answer, answer_audio, timings, status]
        send.click(on_send, [checkpoint, task, audio, text, prompt], outputs)
        reset.click(on_reset, None, outputs)
        checkpoint.change(server.default_task, checkpoint, task)  # each checkpoint offers its own trained task
    return demo
