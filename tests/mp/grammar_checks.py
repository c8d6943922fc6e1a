# The command body's grammar (README "Wire format"), the same corpus on both runtimes: every
# message of it, correctly MAC'd, through the firmware's Commands with a real disconnect
# control whose relay step only counts (tests/test_body_grammar.py builds the corpus, runs
# this on CPython in-process and on real MicroPython, and compares every answer).
# Usage: micropython grammar_checks.py CORPUS WORKDIR  (prints "answer [...]" for each)
import gc
import json
import sys
from binascii import unhexlify

from fakes import DirFS, FakeClock
from meter.remote import commands
from meter.supply.control import Control


class Log:
    def __init__(self):
        self.codes = []

    def log(self, now, code, value=0):
        self.codes.append(code)


class Counting(Control):
    """The real control (argument checks, state, acks); a relay operation is only counted."""

    def trigger(self, who, reconnect, cause):
        self.ops += 1
        return 0, None


def run(corpus, root, emit):
    """emit([code, reason or None, n, relay operations]) for each message of the corpus file,
    one at a time (the 64 KiB heap holds one message and its answer at once, not all)."""
    f = open(corpus)
    head = json.loads(f.readline())
    clock = FakeClock(head["now"])
    log = Log()
    ctl = Counting(1, 1, None, log, clock, DirFS(root))
    ctl.ops = 0
    cmds = commands.Commands(DirFS(root), head["meter"], clock, log, ctl,
                             unhexlify(head["key"]))
    for line in f:
        gc.collect()
        payload = unhexlify(json.loads(line))
        line = None
        before = ctl.ops
        ack = json.loads(cmds.handle(payload)[65:])
        emit([ack["code"], ack.get("reason"), ack["n"], ctl.ops - before])
    f.close()


if __name__ == "__main__":
    run(sys.argv[1], sys.argv[2], lambda answer: print("answer", json.dumps(answer)))
