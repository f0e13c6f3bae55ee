"""A fault-injecting OpenAI-compatible chat endpoint for the judge tests (stdlib only, loopback).

    python tests/eval/fake_judge.py PORT_FILE COUNT_FILE MODE [ARG]

Writes its port to PORT_FILE once listening and appends one line per request to COUNT_FILE.
MODE: scores (every answer carries a score in each rubric's format), garbage (no score anywhere),
fail_first N (HTTP 500 for the first N requests, then scores), refuse_first N (HTTP 400 likewise), slow SECONDS (scores, each answer
after SECONDS).
"""
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SCORES = ('Looks fine. Rating: [[7]] Score: [[4]] Final score: [[3]] {"context_fit_score": 4, '
          '"response_naturalness_score": 3, "colloquialism_degree_score": 5, '
          '"speech_information_relevance_score": 2, "VES_score": 4}')
GARBAGE = "I cannot rate this."


def main():
    port_file, count_file, mode = sys.argv[1:4]
    arg = float(sys.argv[4]) if len(sys.argv) > 4 else 0.0
    lock, seen = threading.Lock(), [0]

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
            with lock:
                seen[0] += 1
                n = seen[0]
                with open(count_file, "a") as f:
                    f.write(json.dumps({"n": n, "model": body.get("model"), "seed": body.get("seed"),
                                        "temperature": body.get("temperature"),
                                        "user": (body.get("messages") or [{}])[-1].get("content")}) + "\n")
            if mode == "fail_first" and n <= arg:
                return self._send(500, {"error": {"message": "injected failure", "type": "server_error"}})
            if mode == "refuse_first" and n <= arg:
                return self._send(400, {"error": {"message": "context too long", "type": "invalid_request_error"}})
            if mode == "slow":
                time.sleep(arg)
            text = GARBAGE if mode == "garbage" else SCORES
            self._send(200, {"id": f"c{n}", "object": "chat.completion", "created": 0, "model": body.get("model"),
                             "choices": [{"index": 0, "finish_reason": "stop",
                                          "message": {"role": "assistant", "content": text}}],
                             "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})

        def _send(self, code, obj):
            data = json.dumps(obj).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    with open(port_file + ".tmp", "w") as f:
        f.write(str(server.server_address[1]))
    import os
    os.replace(port_file + ".tmp", port_file)
    server.serve_forever()


if __name__ == "__main__":
    main()
