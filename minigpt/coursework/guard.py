"""Keeps minigpt's own code out of reach of the student's code, in the grader's child process.

    guard = install(package_dir, own_file)    # before the student's file is executed
    guard.hits()                               # ["minigpt.layers.gelu_backward", ...] so far
    sys.stdout = sys.stderr = CappedOutput()   # what the student's code prints: kept short, counted

runner.py loads this file by its path (the child starts with minigpt off sys.path).
Three layers, each enough on its own for the common routes:

- sys.modules loses every minigpt module, and a finder first on sys.meta_path answers
  `import minigpt...` (by any spelling: importlib, __import__) with a stand-in whose every
  function raises UsesMinigpt, so that a file importing minigpt still loads and only the
  functions that call it lose their points;
- an audit hook (sys.addaudithook: Python code cannot remove one, and it sees every thread)
  refuses to open any file in minigpt's package, so the real modules cannot be loaded even
  with the finder removed or the files' paths given directly; it also refuses to start
  processes, to walk the garbage collector's objects and (but in the whole-model job,
  where minigpt's backend needs it) to use ctypes, the ways around the rest;
- what the runner calls is not reachable from sys.modules["__main__"] (a blank module).

In the whole-model job minigpt's GPT runs in the same process, around the student's
functions: there its objects stay reachable by introspection (object.__subclasses__,
frames). What that job can be cheated of is its own 16 points at most, and only for
layers whose functions passed their own tests, which run with no minigpt at all.
It is not a security sandbox: run untrusted submissions in a container as well.
"""
import os
import sys
import types

PROCESS_EVENTS = ("subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork",
                  "os.forkpty", "pty.spawn")
GC_EVENTS = ("gc.get_objects", "gc.get_referrers", "gc.get_referents")


class CappedOutput:
    """Stands in for stdout and stderr: keeps the first `keep` characters, counts the rest."""

    KEEP = 4096

    def __init__(self, keep=KEEP):
        self.keep, self.kept, self.count = keep, [], 0

    def write(self, text):
        text = str(text)
        room = self.keep - sum(map(len, self.kept))
        if room > 0:
            self.kept.append(text[:room])
        self.count += len(text)
        return len(text)

    def flush(self):
        pass

    def isatty(self):
        return False


class UsesMinigpt(Exception):
    """Raised when student code calls (a stand-in of) minigpt's code."""


class _Stand:
    """minigpt.X.Y as the student's code sees it: calling it records the use and raises."""

    def __init__(self, name, hits):
        self._name, self._hits = name, hits

    def __getattr__(self, attr):
        if attr.startswith("__"):
            raise AttributeError(attr)
        return _Stand(f"{self._name}.{attr}", self._hits)

    def __call__(self, *args, **kwargs):
        self._hits.append(self._name)
        raise UsesMinigpt(f"{self._name} is minigpt's own code, which student code may not use")


class _Finder:
    """Answers every import of minigpt or a module inside it with a stand-in module."""

    def __init__(self, hits):
        self._hits = hits

    def find_spec(self, name, path=None, target=None):
        if name == "minigpt" or name.startswith("minigpt."):
            from importlib.machinery import ModuleSpec
            return ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec):
        module = _StandModule(spec.name)
        module._hits = self._hits
        module.__path__ = []
        return module

    def exec_module(self, module):
        pass


class _StandModule(types.ModuleType):
    def __getattr__(self, attr):
        if attr.startswith("__"):
            raise AttributeError(attr)
        return _Stand(f"{self.__name__}.{attr}", self.__dict__["_hits"])


class Guard:
    """What install() hands the runner: the uses of minigpt seen so far."""

    def __init__(self, hits):
        self._hits = hits

    def hits(self):
        return list(self._hits)


def install(package_dir, own_file=None, model=False):
    """Hide minigpt from the code that runs from now on in this process; returns a Guard.
    model: minigpt's GPT runs here too (the whole-model job), so ctypes stays (minigpt's
    backend uses it)."""
    hits = []
    for name in [n for n in sys.modules if n == "minigpt" or n.startswith("minigpt.")]:
        del sys.modules[name]
    sys.modules["__main__"] = types.ModuleType("__main__")
    sys.meta_path.insert(0, _Finder(hits))
    root = os.path.join(os.path.realpath(package_dir), "")
    own = os.path.realpath(own_file) if own_file else None
    blocked = PROCESS_EVENTS + GC_EVENTS + (() if model else ("ctypes.",))
    # everything the hook uses is bound here: student code may rebind os.path or builtins
    realpath, isabs, fsdecode, basename = os.path.realpath, os.path.isabs, os.fsdecode, os.path.basename
    str_, int_, type_ = str, int, type
    denied, append, seen = PermissionError, hits.append, {}

    def hook(event, args):
        if event == "open" or event == "os.link":
            path = args[0]
            if type_(path) is int_:
                return
            try:
                key = fsdecode(path)
            except (TypeError, ValueError):
                return
            inside = seen.get(key)
            if inside is None:
                real = realpath(key)
                inside = str_.startswith(real, root) and real != own
                if isabs(key):
                    seen[key] = inside
            if inside:
                append(basename(key))
                raise denied(f"{basename(key)} is minigpt's own code, which student code may not read")
        elif str_.startswith(event, blocked):
            raise denied(f"the grader does not allow {event} in student code")

    sys.addaudithook(hook)
    return Guard(hits)
