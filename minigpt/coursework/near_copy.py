"""Functions of a student's file that are near-copies of minigpt's own layer code: a note
for the instructor, never a change of points.

    near_copies(source, 0.9)   ->  ["gelu_backward is 0.97 similar to minigpt.layers.gelu_backward ..."]

minigpt's source is public, so a student can always copy it; the grader cannot stop
that, only show it. Each function is normalised before it is compared: the docstring
goes, every variable and argument is renamed by order of first appearance (v0, v1,
...), and the code is printed back by `ast.unparse`, so names, spacing, comments and
line breaks do not count; attribute names (`.sum`, `.reshape`) and numbers do. Two
normalised functions are compared token by token (difflib's ratio: 1.0 is the same).
"""
import ast
import difflib
import re
from pathlib import Path

NEAR_COPY = 0.9                 # the default threshold of --near-copy
MIN_TOKENS = 50                 # shorter functions are not compared
LAYERS_FILE = Path(__file__).resolve().parents[1] / "layers.py"
_TOKEN = re.compile(r"\w+|[^\w\s]")


class _Rename(ast.NodeTransformer):
    def __init__(self):
        self.names = {}

    def _new(self, name):
        return self.names.setdefault(name, f"v{len(self.names)}")

    def visit_Name(self, node):
        return ast.copy_location(ast.Name(self._new(node.id), node.ctx), node)

    def visit_arg(self, node):
        node.arg = self._new(node.arg)
        node.annotation = None
        return node


def normalised(node):
    """The tokens of a function with its docstring dropped and its names renamed."""
    node = ast.parse(ast.unparse(node)).body[0]           # a copy
    if node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant) \
            and isinstance(node.body[0].value.value, str):
        node.body = node.body[1:] or [ast.Pass()]
    node.name, node.returns, node.decorator_list = "f", None, []
    return _TOKEN.findall(ast.unparse(_Rename().visit(node)))


def functions(source):
    """{name: tokens} of a module's top-level functions (an unparsable source has none)."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return {}
    return {n.name: normalised(n) for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}


def similarity(a, b):
    return difflib.SequenceMatcher(None, a, b, autojunk=False).ratio()


def near_copies(source, threshold=NEAR_COPY, reference=None):
    """One line for each of the student's functions whose closest minigpt layer function is at
    least `threshold` similar. Short functions (under MIN_TOKENS tokens) are left out: there
    are few ways to write `x = wte[idx] + wpe[:T]; return x, (idx, ...)`."""
    ours = functions(reference if reference is not None else LAYERS_FILE.read_text(encoding="utf-8"))
    lines = []
    for name, tokens in functions(source).items():
        if len(tokens) < MIN_TOKENS:
            continue
        score, match = max(((similarity(tokens, theirs), other) for other, theirs in ours.items()),
                           default=(0.0, None))
        if match and score >= threshold:
            lines.append(f"{name} is {score:.2f} similar to minigpt.layers.{match} (names and spacing "
                         "normalised): a near-copy of minigpt's own code?")
    return lines
