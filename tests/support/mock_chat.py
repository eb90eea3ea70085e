#!/usr/bin/env python3
"""A chat model on loopback for the system tests and the Text2SQL example: it speaks OpenAI's
POST /v1/chat/completions and Anthropic's POST /v1/messages, and follows a few fixed rules
instead of thinking.

    mock_chat.py PORT

Extraction calls (a JSON schema, or Anthropic tools) get decisions from the turn:
  - "... always ..." or "... never ..."           -> add a rule (the sentence)
  - "I moved to X" with a "lives in" memory shown  -> supersede it: "The user lives in X."
  - "... is/are/has ..." about a table             -> add an entity
  - anything else                                  -> nothing to remember
Chat calls get an answer that shows what the system prompt carried: a question about orders is
answered with SQL that uses table aliases only when a rule asking for them is in the prompt.
A request whose last message holds "[slow]" is answered after MOCK_CHAT_SLOW_S seconds (4).
Every request is appended, as one JSON line, to the file named by MOCK_CHAT_LOG, if set.
"""
import json
import os
import re
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def decide(shown, turn):
    out = []
    for sentence in re.split(r"(?<=[.!?])\s+", turn.strip()):
        s = sentence.strip()
        low = s.lower()
        if not s:
            continue
        if " always " in f" {low} " or " never " in f" {low} ":
            out.append({"action": "add", "id": None, "type": "rule", "content": s, "importance": 0.9})
            continue
        moved = re.search(r"moved to ([A-Z][\w-]*(?: [A-Z][\w-]*)*)", s)
        if moved:
            city = moved.group(1).strip().rstrip(".")
            old = next((m for m in shown if "lives in" in m["content"]), None)
            new = f"The user lives in {city}."
            if old:
                out.append({"action": "supersede", "id": old["id"], "type": "long_term", "content": new})
            else:
                out.append({"action": "add", "id": None, "type": "long_term", "content": new})
            continue
        if re.search(r"\b(table|column)\b", low) and re.search(r"\b(is|are|has|holds)\b", low):
            out.append({"action": "add", "id": None, "type": "entity", "content": s, "importance": 0.6})
    return {"memories": out}


def reply(system, messages):
    question = messages[-1]["content"] if messages else ""
    if "order" in question.lower():
        if "table aliases" in system.lower():
            sql = "SELECT o.id, o.total, c.name FROM orders o JOIN customers c ON c.id = o.customer_id;"
        else:
            sql = "SELECT orders.id, orders.total, customers.name FROM orders JOIN customers ON customers.id = orders.customer_id;"
        return f"{sql} (turns seen: {len(messages)})"
    return f"Noted. (turns seen: {len(messages)})"


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def send(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        if os.environ.get("MOCK_CHAT_LOG"):
            with open(os.environ["MOCK_CHAT_LOG"], "a") as f:
                f.write(json.dumps({"path": self.path, "body": body}) + "\n")
        anthropic = self.path.endswith("/v1/messages")
        if anthropic:
            system, messages = body.get("system", ""), body.get("messages", [])
            structured = "tools" in body
        elif self.path.endswith("/chat/completions"):
            system = body["messages"][0]["content"] if body.get("messages") else ""
            messages = body.get("messages", [])[1:]
            structured = "response_format" in body
        else:
            return self.send(404, {"error": {"message": "no such endpoint"}})
        if messages and "[slow]" in str(messages[-1].get("content", "")):
            time.sleep(float(os.environ.get("MOCK_CHAT_SLOW_S", "4")))
        if structured:
            shown = json.loads(messages[-1]["content"])
            text = json.dumps(decide(shown["existing_memories"], shown["turn"]))
        else:
            text = reply(system, messages)
        if anthropic:
            block = ({"type": "tool_use", "id": "t1", "name": body["tools"][0]["name"], "input": json.loads(text)}
                     if structured else {"type": "text", "text": text})
            return self.send(200, {"type": "message", "role": "assistant", "content": [block], "stop_reason": "end_turn"})
        return self.send(200, {"object": "chat.completion",
                               "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                            "finish_reason": "stop"}]})


if __name__ == "__main__":
    ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
