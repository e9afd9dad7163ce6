"""Which of a student's functions use minigpt's own code, read from the source.

    uses_minigpt(source)   ->  {"gelu_backward": "line 3: from minigpt import layers as L"}

The reading follows Python's scopes. A module-level `import minigpt...` or
`from minigpt... import ...` (or a relative import) makes a module-level name
minigpt's; a function (or class, or module-level assignment) that refers to such a
name, without a local of its own by that name, uses minigpt, and so does one that
imports minigpt itself, names it in a string (importlib, __import__) or refers to a
module-level name that uses it, followed to a fixed point. The `if __name__ ==
"__main__":` block is skipped: it never runs under the grader. The run-time guard
(guard.py) catches what a reading of the source cannot.
"""
import ast

SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)


def _is_minigpt(module, level=0):
    return level > 0 or module == "minigpt" or (module or "").startswith("minigpt.")


def _minigpt_imports(node):
    """(name bound, node) for each minigpt import statement directly in node (not nested scopes)."""
    if isinstance(node, ast.Import):
        return [(a.asname or a.name.split(".")[0], node) for a in node.names if _is_minigpt(a.name)]
    if isinstance(node, ast.ImportFrom) and _is_minigpt(node.module, node.level):
        return [(a.asname or a.name, node) for a in node.names]
    return []


def _is_main_guard(node):
    """`if __name__ == "__main__":` (either way round)."""
    if not isinstance(node, ast.If) or not isinstance(node.test, ast.Compare) or len(node.test.ops) != 1:
        return False
    sides = [node.test.left, node.test.comparators[0]]
    return (isinstance(node.test.ops[0], ast.Eq) and any(isinstance(s, ast.Name) and s.id == "__name__"
                                                         for s in sides)
            and any(isinstance(s, ast.Constant) and s.value == "__main__" for s in sides))


def _own_nodes(scope):
    """The nodes of a scope's own body, not those of the scopes nested in it."""
    body = scope.body if isinstance(scope.body, list) else [scope.body]
    stack = list(body)
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, SCOPES):
            stack += node.decorator_list if not isinstance(node, ast.Lambda) else []
            continue                                 # its body is a scope of its own
        stack += list(ast.iter_child_nodes(node))


def _locals(scope):
    """Names local to a function (parameters, assignments, imports, nested defs), minus globals."""
    names, glob = set(), set()
    if not isinstance(scope, ast.ClassDef):
        a = scope.args
        names |= {x.arg for x in a.posonlyargs + a.args + a.kwonlyargs + [a.vararg, a.kwarg] if x}
    for node in _own_nodes(scope):
        if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            names.add(node.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {a.asname or a.name.split(".")[0] for a in node.names}
        elif isinstance(node, SCOPES) and not isinstance(node, ast.Lambda):
            names.add(node.name)
        elif isinstance(node, ast.Global):
            glob |= set(node.names)
    return names - glob


def _free_names(scope, bound=frozenset()):
    """Names a scope (and the scopes inside it) look up at module level."""
    bound = bound | (_locals(scope) if isinstance(scope, SCOPES) else set())
    found = set()
    for node in _own_nodes(scope):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load) and node.id not in bound:
            found.add(node.id)
        elif isinstance(node, SCOPES):
            found |= _free_names(node, bound)
    return found


def _outer_names(node):
    """Names a def or class statement itself reads at module level: decorators, defaults, bases."""
    parts = list(node.decorator_list) + (list(node.bases) + [k.value for k in node.keywords]
                                         if isinstance(node, ast.ClassDef) else
                                         node.args.defaults + [d for d in node.args.kw_defaults if d])
    return {n.id for p in parts for n in ast.walk(p) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}


def _module_statements(tree):
    """Module-level statements in order, into try/if/with/for bodies, without the main guard."""
    out = []
    def visit(nodes):
        for node in nodes:
            if _is_main_guard(node):
                continue
            out.append(node)
            if isinstance(node, (ast.If, ast.Try, ast.With, ast.For, ast.While)):
                for part in ("body", "orelse", "finalbody"):
                    visit(getattr(node, part, []))
                for handler in getattr(node, "handlers", []):
                    visit(handler.body)
    visit(tree.body)
    return out


def uses_minigpt(source):
    """{module-level name: why} for every function, class or assignment that reaches minigpt.
    Raises SyntaxError when the source does not parse."""
    tree = ast.parse(source)
    why, top = {}, {}                            # name -> reason; name -> its definition
    for node in _module_statements(tree):
        for name, imp in _minigpt_imports(node):
            why[name] = _line(imp, source)
            top.pop(name, None)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            top[node.name] = node
            why.pop(node.name, None)             # a def replaces an imported name: judge its body
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            for t in node.targets if isinstance(node, ast.Assign) else [node.target]:
                for name in ast.walk(t):
                    if isinstance(name, ast.Name):
                        top[name.id] = node
                        why.pop(name.id, None)
    free = {}
    for name, node in top.items():
        if isinstance(node, SCOPES):
            inner = [n for n in ast.walk(node) if n is not node]
            docstrings = {id(n.body[0].value) for n in ast.walk(node) if isinstance(n, SCOPES[:2] + (ast.ClassDef,))
                          and n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
            free[name] = _free_names(node) | _outer_names(node)
        else:
            inner, docstrings = list(ast.walk(node.value)) if node.value else [], set()
            free[name] = {n.id for n in inner if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
        for sub in inner:                        # a local import of minigpt, or a string naming it
            local = _minigpt_imports(sub)
            if local:
                why.setdefault(name, _line(local[0][1], source))
            elif isinstance(sub, ast.Constant) and isinstance(sub.value, str) and "minigpt" in sub.value \
                    and id(sub) not in docstrings:
                why.setdefault(name, _line(sub, source))
    changed = True
    while changed:                               # follow references to a fixed point
        changed = False
        for name in top:
            if name not in why:
                hit = next((n for n in sorted(free[name]) if n in why), None)
                if hit:
                    why[name] = why[hit]
                    changed = True
    return {name: reason for name, reason in why.items() if name in top or name.endswith(
        ("_forward", "_backward"))}


def _line(node, source):
    text = ast.get_source_segment(source, node) or ""
    text = " ".join(text.split())
    return f"line {node.lineno}: {text[:70]}"
