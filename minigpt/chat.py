"""An interactive session for `python -m minigpt.sample --interactive`: the model stays loaded,
each line read is a prompt, each answer is streamed as it is generated.

    python -m minigpt.sample --ckpt out/ckpt.npz --interactive --max-new-tokens 200
    printf 'ROMEO:\nJULIET:\n' | python -m minigpt.sample --ckpt out/ckpt.npz --interactive --seed 0

The line is the prompt exactly as typed (its newline dropped, spaces kept), so for a task
checkpoint it is the task's prompt ("three hundred and forty-two: ") and the answer ends at
the task's end marker. An empty line or the end of input (Ctrl-D) ends the session; Ctrl-C
stops the answer being written, and a second Ctrl-C at the prompt ends the session.
"""
import sys


def session(answer, stdin, out):
    """Read prompts from stdin until an empty line or its end; answer(line) prints each answer.

    A prompt the tokenizer cannot encode gets one line on stderr and the session goes on; the
    exit status is then 2 (else 0). On a terminal a "> " prompt is shown and a note on how to
    end; from a pipe nothing but the answers is written."""
    tty = _isatty(stdin) and _isatty(out)
    if tty:
        print("one prompt per line; an empty line or Ctrl-D ends, Ctrl-C stops an answer", file=sys.stderr)
    failed = False
    while True:
        if tty:
            out.write("> ")
            out.flush()
        try:
            line = stdin.readline()
        except KeyboardInterrupt:
            out.write("\n")
            return 130
        line = line.rstrip("\r\n") if line else ""
        if not line:                               # an empty line, or the end of input
            return 2 if failed else 0
        try:
            answer(line)
        except ValueError as e:                    # this prompt only: the session goes on
            print(f"python -m minigpt.sample: error: {str(e).splitlines()[0]}", file=sys.stderr)
            failed = True
        except KeyboardInterrupt:                  # stop this answer, not the session
            out.write("\n")
            out.flush()


def _isatty(stream):
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
