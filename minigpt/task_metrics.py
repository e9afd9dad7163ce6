"""Scores for a task's answers: exact match, the value of an arithmetic expression, ROUGE-L.

    value = arithmetic("sum(i*i for i in range(1, 6))")      # 55; never eval()
    rouge_l("gale in Gullrock", "severe gale in Gullrock")   # 0.857: F1 of the longest common subsequence
    scores("value", results)          # {"value_match": ...} from task.exact_match's results

Exact match is every task's score. `--task-metric` adds one that fits the task:
"value" counts a code answer right when it evaluates to the reference's value
(so `1+4+9` and `sum(i*i for i in range(1, 4))` are both 14), "rouge_l" gives a
summary credit for the words it shares with the reference, in order.

The evaluator reads the text with `ast.parse` and walks the tree, accepting
integers, + - * // % and bounded **, unary minus, comparisons (1 or 0), and sum/min/max/abs/len/range
over generator expressions with one loop variable: arithmetic only. Anything
else (a name it did not bind, attribute access, a call of anything else,
strings, lambdas, __import__) is refused with NotArithmetic, before anything
runs. Sizes are bounded so that no expression can take long or use much memory.
"""
import ast
import math
import operator

from .data import DataError

MAX_CHARS = 300                # longer text is not an answer here
MAX_DIGITS = 60                # an integer may have at most this many digits
MAX_EXPONENT = 64              # ** with a larger exponent is refused
MAX_RANGE = 10_000             # a range() may hold at most this many numbers
MAX_STEPS = 100_000            # nodes evaluated in all, loops counted


class NotArithmetic(ValueError):
    """The text is not an expression the arithmetic evaluator accepts."""


BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
          ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow}
COMPARE = {ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
           ast.Gt: operator.gt, ast.GtE: operator.ge}
REDUCE = {"sum": sum, "min": min, "max": max, "len": len}


def arithmetic(text):
    """The integer value of an arithmetic expression; NotArithmetic for anything else."""
    if not isinstance(text, str) or len(text) > MAX_CHARS:
        raise NotArithmetic(f"not a string of at most {MAX_CHARS} characters")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as e:
        raise NotArithmetic(f"not an expression ({type(e).__name__})") from None
    return _Walk().value(tree.body, {})


class _Walk:
    """One evaluation: counts its steps, keeps the loop variables in scope."""

    def __init__(self):
        self.steps = 0

    def value(self, node, scope):
        self.steps += 1
        if self.steps > MAX_STEPS:
            raise NotArithmetic(f"more than {MAX_STEPS} steps")
        if isinstance(node, ast.Constant) and type(node.value) is int:
            return self.checked(node.value)
        if isinstance(node, ast.Name) and node.id in scope:
            return scope[node.id]
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            v = self.value(node.operand, scope)
            return -v if isinstance(node.op, ast.USub) else v
        if isinstance(node, ast.BinOp) and type(node.op) in BINARY:
            a, b = self.value(node.left, scope), self.value(node.right, scope)
            if isinstance(node.op, ast.Pow) and not 0 <= b <= MAX_EXPONENT:
                raise NotArithmetic(f"an exponent outside 0..{MAX_EXPONENT}")
            if isinstance(node.op, (ast.FloorDiv, ast.Mod)) and b == 0:
                raise NotArithmetic("division by zero")
            return self.checked(BINARY[type(node.op)](a, b))
        if isinstance(node, ast.Compare) and all(type(op) in COMPARE for op in node.ops):
            values = [self.value(n, scope) for n in (node.left, *node.comparators)]
            return int(all(COMPARE[type(op)](a, b) for op, a, b in zip(node.ops, values, values[1:])))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and not node.keywords:
            return self.call(node.func.id, node.args, scope)
        raise NotArithmetic(f"{type(node).__name__} is not arithmetic")

    def checked(self, v):
        if len(str(abs(v))) > MAX_DIGITS:
            raise NotArithmetic(f"a number of more than {MAX_DIGITS} digits")
        return v

    def call(self, name, args, scope):
        if name == "abs" and len(args) == 1:
            return abs(self.value(args[0], scope))
        if name in REDUCE and len(args) == 1:
            items = self.sequence(args[0], scope)
            if name in ("min", "max") and not items:
                raise NotArithmetic(f"{name}() of nothing")
            return self.checked(REDUCE[name](items))
        if name in ("min", "max") and len(args) >= 2:
            return REDUCE[name](self.value(a, scope) for a in args)
        raise NotArithmetic(f"a call of {name}() with {len(args)} arguments is not arithmetic")

    def sequence(self, node, scope):
        """The numbers of range(...), a list or tuple of expressions, or a generator over one."""
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "range":
            if node.keywords or not 1 <= len(node.args) <= 3:
                raise NotArithmetic("range() takes one to three numbers")
            bounds = [self.value(a, scope) for a in node.args]
            if 0 in bounds[2:]:
                raise NotArithmetic("range() with step 0")
            r = range(*bounds)
            if _length(r) > MAX_RANGE:
                raise NotArithmetic(f"a range of more than {MAX_RANGE} numbers")
            self.steps += len(r)
            if self.steps > MAX_STEPS:
                raise NotArithmetic(f"more than {MAX_STEPS} steps")
            return list(r)
        if isinstance(node, (ast.List, ast.Tuple)):
            return [self.value(e, scope) for e in node.elts]
        if isinstance(node, (ast.GeneratorExp, ast.ListComp)) and len(node.generators) == 1:
            gen = node.generators[0]
            if not isinstance(gen.target, ast.Name) or gen.is_async:
                raise NotArithmetic("a loop over one plain name only")
            out = []
            for v in self.sequence(gen.iter, scope):
                inner = {**scope, gen.target.id: v}
                if all(self.value(c, inner) for c in gen.ifs):
                    out.append(self.value(node.elt, inner))
            return out
        raise NotArithmetic(f"{type(node).__name__} is not a sequence of numbers")


def _length(r):
    """len(r), or infinity where it is past a machine integer (len(range(10**20)) raises OverflowError)."""
    try:
        return len(r)
    except OverflowError:
        return math.inf


def value_match(answer, reference):
    """True when both texts are arithmetic with the same value; False otherwise (never raises)."""
    try:
        return answer is not None and arithmetic(answer) == arithmetic(reference)
    except NotArithmetic:
        return False


def lcs_length(a, b):
    """Length of the longest common subsequence of two sequences (dynamic programming, O(len a * len b))."""
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def words(text):
    """Lower-case words, punctuation dropped: the units ROUGE-L counts."""
    return "".join(c.lower() if c.isalnum() or c in "-'" else " " for c in text).split()


def rouge_l(answer, reference):
    """ROUGE-L F1 (Lin, 2004) over words: 2PR / (P + R) with P = LCS / len(answer),
    R = LCS / len(reference); 0 for no answer, 1 for the same words in the same order."""
    a, r = words(answer or ""), words(reference)
    lcs = lcs_length(a, r)
    if not lcs:
        return 0.0
    p, rec = lcs / len(a), lcs / len(r)
    return 2 * p * rec / (p + rec)


METRICS = {                    # --task-metric: the record's key and the score of one answer
    "exact": None,             # exact match alone, what task.exact_match computes
    "value": ("value_match", value_match),
    "rouge_l": ("rouge_l", rouge_l),
}

KEYS = [m[0] for m in METRICS.values() if m]      # the metrics.jsonl keys they add


def scores(metric, results):
    """{key: mean score} of the metric over task.exact_match's results (empty for "exact")."""
    if METRICS[metric] is None:
        return {}
    key, score = METRICS[metric]
    return {key: sum(score(answer, completion) for _, completion, answer, _ in results) / max(len(results), 1)}


def check_references(metric, completions, lines, path):
    """DataError naming the first line whose completion the metric cannot score: for
    "value", every reference must be arithmetic the evaluator accepts."""
    if metric != "value":
        return
    for completion, n in zip(completions, lines):
        try:
            arithmetic(completion)
        except NotArithmetic as e:
            raise DataError(f"{path}:{n}: --task-metric value needs completions that are arithmetic "
                             f"expressions, and {completion[:40]!r} is not ({e})") from None
