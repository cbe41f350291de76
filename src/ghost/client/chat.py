"""A conversation with Ghost in the terminal: the answer streams to stdout as it is generated,
what Ghost does on the way (tool calls, reasoning) goes dimmed to stderr, apart from the answer.

The conversation is kept here, client-side, and sent whole with each question, as any OpenAI
client does; `/save` and `/load` carry it in and out of workspace archives.
"""

from __future__ import annotations

from contextlib import suppress
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.text import Text

from ghost.client import transfer
from ghost.client.connection import ClientError, GhostConnection
from ghost.client.sse import Activity, Answer, ChatEvent, chat_events

HELP = """commands:
  /save FILE   save the workspace (sandbox files, scratchpad, this conversation) to a zip
  /load FILE   restore a workspace zip and continue its conversation
  /reset       start a new conversation
  /exit        quit (or Ctrl-D); Ctrl-C stops an answer"""


class Renderer:
    """Writes one streamed turn: answer text to `out`, activity dimmed to `err`."""

    def __init__(self, out: Console, err: Console) -> None:
        self.out, self.err = out, err
        self.answer: list[str] = []
        self._activity_open = False  # activity written without its final newline yet

    def show(self, event: ChatEvent) -> None:
        if isinstance(event, Activity):
            self.err.print(event.text, style="dim", end="")
            self._activity_open = not event.text.endswith("\n")
        elif isinstance(event, Answer):
            if self._activity_open:
                self.err.print()
                self._activity_open = False
            self.out.print(event.text, end="")
            self.answer.append(event.text)

    def finish(self) -> str:
        if self.answer:
            self.out.print()
        elif self._activity_open:
            self.err.print()
        return "".join(self.answer)


class ChatSession:
    def __init__(self, conn: GhostConnection, out: Console, err: Console, model: str = "") -> None:
        self.conn, self.out, self.err, self.model = conn, out, err, model
        self.history: list[dict[str, Any]] = []

    def ask(self, question: str) -> str:
        """Send the question with the conversation so far, stream the answer, keep both."""
        self.history.append({"role": "user", "content": question})
        try:
            answer = self._turn()
        except BaseException:
            self.history.pop()  # an unanswered question does not stay in the conversation
            raise
        self.history.append({"role": "assistant", "content": answer})
        return answer

    def _turn(self) -> str:
        body: dict[str, Any] = {"messages": self.history, "stream": True}
        if self.model:
            body["model"] = self.model
        renderer = Renderer(self.out, self.err)
        try:
            with self.conn.stream("POST", "/v1/chat/completions", json=body,
                                  headers={"accept": "text/event-stream"}) as response:
                for event in chat_events(response.iter_bytes()):
                    renderer.show(event)
        finally:
            answer = renderer.finish()
        return answer

    def save(self, dest: str) -> None:
        saved = transfer.save_workspace(self.conn, Path(dest), self.err, history=self.history)
        self.err.print(f"saved the workspace to {saved}")

    def load(self, source: str) -> None:
        result = transfer.load_workspace(self.conn, Path(source), self.err)
        history = result.get("chat_history")
        self.history = [m for m in history if isinstance(m, dict)] if isinstance(history, list) else []
        self.err.print(f"loaded {source}: {result.get('files', 0)} files, {len(self.history)} messages")


def run_command(session: ChatSession, line: str) -> bool:
    """Run a /command; False means quit."""
    name, _, arg = line.partition(" ")
    arg = arg.strip()
    if name in ("/exit", "/quit"):
        return False
    if name in ("/save", "/load") and not arg:
        raise ClientError(f"usage: {name} FILE")
    if name == "/save":
        session.save(arg)
    elif name == "/load":
        session.load(arg)
    elif name == "/reset":
        session.history.clear()
        session.err.print("new conversation", style="dim")
    else:
        session.err.print(HELP)
    return True


def repl(session: ChatSession) -> None:
    """The interactive loop. Errors are shown and the conversation goes on."""
    with suppress(ImportError):
        import readline  # noqa: F401  (line editing and history for input())
    session.err.print(f"Ghost at {session.conn.settings.base_url} — /help for commands, Ctrl-D to quit",
                      style="dim")
    while True:
        try:
            line = session.out.input(Text("› ", style="bold")).strip()
        except EOFError:
            session.out.print()
            return
        except KeyboardInterrupt:
            session.out.print()
            continue
        if line and not _handle(session, line):
            return


def _handle(session: ChatSession, line: str) -> bool:
    try:
        if line.startswith("/"):
            return run_command(session, line)
        session.ask(line)
    except KeyboardInterrupt:
        session.err.print("[stopped]", style="dim")
    except ClientError as exc:
        session.err.print(f"ghost: {exc}", style="red")
    return True
