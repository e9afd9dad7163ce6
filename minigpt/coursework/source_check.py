"""Which of a student's functions use minigpt's own code, read from the source.

    uses_minigpt(source)   ->  {"gelu_backward": "line 3: from minigpt import layers as L"}

A name bound by `import minigpt...` or `from minigpt... import ...` (or by a
relative import) is minigpt's. A top-level function or assignment that refers
to such a name, or to a string that names minigpt (importlib, __import__),
uses minigpt; so does anything that refers to a top-level name that does,
followed to a fixed point. The run-time check in runner.py catches what a
reading of the source cannot (exec, getattr on a module found at run time).
"""
import ast


def _is_minigpt(module, level=0):
    return level > 0 or module == "minigpt" or (module or "").startswith("minigpt.")


def uses_minigpt(source):
    """{top-level name: why} for every top-level function or assignment that reaches minigpt.
    Raises SyntaxError when the source does not parse."""
    tree = ast.parse(source)
    why = {}                                     # name -> reason
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if _is_minigpt(alias.name):
                    why[alias.asname or alias.name.split(".")[0]] = _line(node, source)
        elif isinstance(node, ast.ImportFrom) and _is_minigpt(node.module, node.level):
            for alias in node.names:
                why[alias.asname or alias.name] = _line(node, source)
    top = {}                                     # top-level name -> its definition
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            top[node.name] = node
            why.pop(node.name, None)             # a def replaces an imported name: judge its body
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                for name in ast.walk(t):
                    if isinstance(name, ast.Name):
                        top[name.id] = node
    docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                  if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and n.body
                  and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    for name, node in top.items():               # a string that names minigpt (importlib, __import__)
        for sub in ast.walk(node):
            if isinstance(sub, ast.Constant) and isinstance(sub.value, str) and "minigpt" in sub.value \
                    and id(sub) not in docstrings:
                why.setdefault(name, _line(sub, source))
    changed = True
    while changed:                               # follow references to a fixed point
        changed = False
        for name, node in top.items():
            if name in why:
                continue
            for sub in ast.walk(node):
                if isinstance(sub, (ast.Name, ast.alias)) and getattr(sub, "id", None) in why:
                    why[name] = why[sub.id]
                    changed = True
                    break
    return {name: reason for name, reason in why.items() if name in top or name.endswith(
        ("_forward", "_backward"))}


def _line(node, source):
    text = ast.get_source_segment(source, node) or ""
    text = " ".join(text.split())
    return f"line {node.lineno}: {text[:70]}"
