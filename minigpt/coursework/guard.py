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
  refuses to open any file in minigpt's package, or in any other copy of minigpt's package
  or checkout it can recognise (a folder holding layers.py and model.py or their .pyc, a
  folder named minigpt with Python files, a folder holding minigpt/layers.py; the job's own
  folders and, for the last two, the interpreter's own are left alone), and any folder
  outside the job's two, so the real modules cannot be loaded even
  with the finder removed or the files' paths given directly; deciding afresh each time
  (a path may be swapped after a check), it also refuses the package's folder and those
  above it (no directory descriptor to openat from), relative paths that climb or name the
  package's folder, symlinks, renames into the package, sub-interpreters (which have no
  audit hook) and their modules; and it refuses to start processes, to walk the garbage
  collector's objects and to use ctypes, the ways around the rest;
- what the runner calls is not reachable from sys.modules["__main__"] (a blank module).

minigpt itself is never loaded in the student's process (the whole model runs in the
grader's, which asks the student's process for one function's outputs at a time).
This is a guard, not the boundary: without root a determined student gets round it. As
root, sandbox.py makes the package unreadable to the student's user, and the kernel
refuses what this hook does not see.
"""
import os
import sys
import types

PROCESS_EVENTS = ("subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork",
                  "os.forkpty", "pty.spawn")
GC_EVENTS = ("gc.get_objects", "gc.get_referrers", "gc.get_referents")
INTERPRETER_EVENTS = ("cpython.PyInterpreterState_New",)   # a sub-interpreter has no audit hook
BLOCKED_MODULES = frozenset({"_xxsubinterpreters", "_interpreters", "_xxinterpchannels", "_interpchannels",
                             "_interpqueues", "_posixsubprocess", "_testcapi", "_testinternalcapi",
                             "_testmultiphase", "_testsinglephase"})


class CappedOutput:
    """Stands in for stdout and stderr: keeps the first `keep` characters, counts the rest."""

    KEEP = 4096

    RECENT = 300                # and the first RECENT since mark(), for the test it was printed in

    def __init__(self, keep=KEEP):
        self.keep, self.kept, self.count = keep, [], 0
        self.recent = []

    def mark(self):
        self.recent = []

    def write(self, text):
        text = str(text)
        room = self.keep - sum(map(len, self.kept))
        if room > 0:
            self.kept.append(text[:room])
        room = self.RECENT - sum(map(len, self.recent))
        if room > 0:
            self.recent.append(text[:room])
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


def install(package_dir, own_file=None):
    """Hide minigpt from the code that runs from now on in this process; returns a Guard."""
    hits = []
    for name in [n for n in sys.modules if n == "minigpt" or n.startswith("minigpt.") or n in BLOCKED_MODULES]:
        del sys.modules[name]
    sys.modules["__main__"] = types.ModuleType("__main__")
    sys.meta_path.insert(0, _Finder(hits))
    real_root = os.path.realpath(package_dir)
    root, name = os.path.join(real_root, ""), os.path.basename(real_root)
    own = os.path.realpath(own_file) if own_file else None
    blocked = PROCESS_EVENTS + GC_EVENTS + INTERPRETER_EVENTS + ("ctypes.",)
    modules = BLOCKED_MODULES | frozenset({"_ctypes", "ctypes"})
    # everything the hook uses is bound here: student code may rebind os.path or builtins
    realpath, isabs, fsdecode, basename, sep = os.path.realpath, os.path.isabs, os.fsdecode, os.path.basename, os.sep
    str_, int_, type_, any_ = str, int, type, any
    denied, append = PermissionError, hits.append

    isfile, isdir, join, dirname = os.path.isfile, os.path.isdir, os.path.join, os.path.dirname
    startswith, endswith, tuple_ = str_.startswith, str_.endswith, tuple
    tag = sys.implementation.cache_tag or "none"
    # the interpreter's own files (a venv may sit inside a checkout), and the job's two folders
    python = tuple_({join(realpath(p), "") for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)})
    exempt = tuple_({join(realpath(os.getcwd()), "")} | ({join(dirname(own), "")} if own else set()))

    def minigpt_like(real):
        """Is real in (or at) any copy of minigpt's package (a folder holding layers.py and
        model.py, or their .pyc; a folder named minigpt with an __init__.py or Python files),
        or, outside the interpreter's own folders, in a checkout (a folder holding minigpt/layers.py:
        its .git, notebooks and docs)? Only stat() is used: it raises no audit event."""
        if startswith(join(real, ""), exempt):
            return False
        ours = startswith(join(real, ""), python)
        d = real
        while True:
            layers = isfile(join(d, "layers.py")) or isfile(join(d, "__pycache__", "layers." + tag + ".pyc"))
            if layers and (isfile(join(d, "model.py")) or isfile(join(d, "__pycache__", "model." + tag + ".pyc"))):
                return True
            if not ours and basename(d) == "minigpt" and (isfile(join(d, "__init__.py")) or
                                                          endswith(real, (".py", ".pyc"))):
                return True
            if not ours and isfile(join(d, "minigpt", "layers.py")):
                return True
            up = dirname(d)
            if up == d:
                return False
            d = up

    def touches(path):
        """Does path lead into minigpt's package, to it, or to a folder above it? Decided
        afresh at every call (a path checked once may be swapped later). A relative path
        may be meant for a directory descriptor (openat), so it may not climb (..) nor
        name the package's folder at all."""
        if type_(path) is int_:
            return False
        try:
            key = fsdecode(path)
        except (TypeError, ValueError):
            return False
        if not isabs(key):
            parts = str_.split(key, sep)
            if any_(p == ".." or p == name for p in parts):
                return True
        real = realpath(key)
        if real == own:
            return False
        if str_.startswith(real, root) or str_.startswith(root, real + sep) or real + sep == root or real == sep:
            return True
        # any other copy of minigpt; and no folder opened (a directory descriptor to openat from)
        return minigpt_like(real) or (isdir(real) and not startswith(join(real, ""), exempt))

    def hook(event, args):
        if event == "open" or event == "os.link" or event == "os.rename" or event == "os.symlink":
            paths = args[:2] if event != "open" else args[:1]
            if event == "os.symlink":
                raise denied("the grader does not allow os.symlink in student code")
            for path in paths:
                if touches(path):
                    append(basename(fsdecode(path)))
                    raise denied(f"{basename(fsdecode(path))} is minigpt's own code, which student code may not read")
        elif event == "import":
            if args[0] in modules:
                raise denied(f"the grader does not allow the module {args[0]} in student code")
        elif str_.startswith(event, blocked):
            raise denied(f"the grader does not allow {event} in student code")

    sys.addaudithook(hook)
    return Guard(hits)
