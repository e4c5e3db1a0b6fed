"""Source patches: the edit of a training script that matches a remedy.

``trainmedic fix`` verifies remedies by re-running the user's script; when the remedy that helped
corresponds to a literal in the script, :func:`patch_for` rewrites the source so that the user can
apply it as a diff (the user's files are never edited). Nodes are located with :mod:`ast` and only
their exact text spans are replaced: comments and formatting elsewhere stay as they were. What
cannot be rewritten safely gives None.
"""

from __future__ import annotations

import ast
import difflib
import math
import re
import textwrap
from dataclasses import dataclass

OPTIMIZERS = frozenset({"SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "Adadelta", "Adamax", "NAdam",
                        "RAdam", "ASGD", "Rprop", "LBFGS", "SparseAdam", "Adafactor", "Muon"})
_FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef)
_SCOPES = (*_FUNCTIONS, ast.ClassDef, ast.Lambda, ast.ListComp, ast.SetComp, ast.DictComp,
           ast.GeneratorExp)
_COMPOUND = (ast.For, ast.AsyncFor, ast.While, ast.If, ast.With, ast.AsyncWith)
_LOOPS = (ast.For, ast.AsyncFor, ast.While, *_FUNCTIONS)
_OPT_NAME = re.compile(r"(^|_)(opt|optim|optimizer)(_|\d|$)", re.IGNORECASE)
_CONSTANT_INITS = ("zeros_", "ones_", "constant_")
_SGD_ONLY = ("momentum", "nesterov", "dampening")


@dataclass
class Patch:
    """A rewritten script: ``source`` is the new full text, ``summary`` says what changed (one line)."""

    remedy: str
    source: str
    summary: str

    def diff(self, old: str, path: str) -> str:
        """The unified diff from ``old`` to :attr:`source`, with headers ``a/<path>``, ``b/<path>``."""
        lines = difflib.unified_diff(_lines(old), _lines(self.source), f"a/{path}", f"b/{path}")
        return "".join(s if s.endswith("\n") else s + "\n\\ No newline at end of file\n" for s in lines)


def patch_for(remedy_id: str, source: str, info: dict | None = None) -> Patch | None:
    """The patch of ``source`` that makes remedy ``remedy_id``'s change, or None when the script
    does not express that setting in a way that can be rewritten safely (or the id is unknown).

    ``info`` may carry runtime facts: ``optimizer_class`` (the class name of the optimizer the
    remedy acted on) and ``missing`` (names of the parameters that were left out of it).
    """
    try:
        script = _Script(source)
    except (SyntaxError, ValueError):
        return None
    info = info or {}
    scaled = re.fullmatch(r"(lr_scale|weight_decay)_(.+)", remedy_id)
    if scaled:
        factor = _factor(scaled[2])
        key = "lr" if scaled[1] == "lr_scale" else "weight_decay"
        change = factor and _scale_setting(script, key, factor, info)
    elif remedy_id in _REWRITES:
        change = _REWRITES[remedy_id](script, info)
    else:
        return None
    new = change and script.apply(change[0])
    if not new or new == source:
        return None
    try:
        ast.parse(new)
    except SyntaxError:
        return None
    return Patch(remedy_id, new, change[1])


class _Script:
    """A parsed script: its text, tree and parent links, and text positions and edits of nodes."""

    def __init__(self, source: str) -> None:
        self.src = source
        self.tree = ast.parse(source)
        self.nl = "\r\n" if "\r\n" in source else "\n"
        self.starts = [0] + [m.end() for m in re.finditer("\n", source)]
        self.parent = {c: n for n in ast.walk(self.tree) for c in ast.iter_child_nodes(n)}

    def pos(self, line: int, col: int) -> int:
        """The text offset of an ast position (1-based line, column in UTF-8 bytes)."""
        start = self.starts[line - 1]
        return start + len(self.src[start:start + col].encode()[:col].decode())

    def span(self, node) -> tuple[int, int]:
        return self.pos(node.lineno, node.col_offset), self.pos(node.end_lineno, node.end_col_offset)

    def text(self, node) -> str:
        start, end = self.span(node)
        return self.src[start:end]

    def line_end(self, line: int) -> int:
        """The offset of the end of ``line``'s content (before its line break)."""
        end = self.starts[line] - 1 if line < len(self.starts) else len(self.src)
        return end - 1 if self.src[end - 1:end] == "\r" else end

    def indent(self, node) -> str | None:
        """The indentation of ``node`` when it begins its line, else None."""
        head = self.src[self.starts[node.lineno - 1]:self.pos(node.lineno, node.col_offset)]
        return None if head.strip() else head

    def alone(self, node) -> bool:
        """Whether ``node`` has its lines to itself (but for a trailing comma and comment)."""
        tail = self.src[self.span(node)[1]:self.line_end(node.end_lineno)]
        return self.indent(node) is not None and re.fullmatch(r"\s*,?\s*(#.*)?", tail) is not None

    def delete_lines(self, node) -> tuple[int, int, str]:
        end = self.starts[node.end_lineno] if node.end_lineno < len(self.starts) else len(self.src)
        return self.starts[node.lineno - 1], end, ""

    def insert_before(self, stmt, lines: list[str]) -> tuple[int, int, str] | None:
        """An edit putting ``lines`` before ``stmt``, indented like it (None if it shares its line)."""
        indent = self.indent(stmt)
        if indent is None:
            return None
        at = self.starts[stmt.lineno - 1]
        return at, at, "".join(indent + line + self.nl for line in lines)

    def insert_after(self, stmt, lines: list[str]) -> tuple[int, int, str] | None:
        """An edit putting ``lines`` after ``stmt``, indented like it (None if it shares its line)."""
        indent = self.indent(stmt)
        if indent is None:
            return None
        at = self.line_end(stmt.end_lineno)
        return at, at, "".join(self.nl + indent + line for line in lines)

    def apply(self, edits) -> str | None:
        """The source with ``edits`` ``(start, end, text)`` made; None if two overlap."""
        out, last = self.src, len(self.src)
        for start, end, text in sorted(set(edits), reverse=True):
            if end > last:
                return None
            out, last = out[:start] + text + out[end:], start
        return out

    def calls(self, *names: str) -> list[ast.Call]:
        """The calls of a function or method named one of ``names``, in source order."""
        found = [n for n in ast.walk(self.tree) if isinstance(n, ast.Call) and _name(n.func) in names]
        return sorted(found, key=lambda n: (n.lineno, n.col_offset))

    def constructed(self, names) -> list[tuple[str, ast.Call]]:
        """(target text, call) of each assignment of a call named one of ``names``."""
        return [(self.text(t), n.value) for n in ast.walk(self.tree) if isinstance(n, ast.Assign)
                and isinstance(n.value, ast.Call) and _name(n.value.func) in names for t in n.targets]

    def enclosing(self, node, kinds):
        while node in self.parent:
            node = self.parent[node]
            if isinstance(node, kinds):
                return node
        return None

    def scope(self, node):
        """The function ``node`` is in, or the module."""
        return self.enclosing(node, _FUNCTIONS) or self.tree

    def assigned_value(self, name: ast.Name):
        """The value of ``name`` when its function (else the module) binds it exactly once, by a
        plain assignment; else None."""
        scope = self.scope(name)
        found = _bindings(scope, name.id) or (_bindings(self.tree, name.id) if scope is not self.tree else [])
        if len(found) != 1 or not isinstance(found[0], ast.Name):
            return None
        stmt = self.parent[found[0]]
        if isinstance(stmt, ast.Assign) and stmt.targets == [found[0]]:
            return stmt.value
        if isinstance(stmt, ast.AnnAssign) and stmt.target is found[0]:
            return stmt.value
        return None

    def imports(self) -> dict[str, str]:
        """What the module-level imports bind: dotted path -> local name."""
        bound = {}
        for stmt in self.tree.body:
            for a in stmt.names if isinstance(stmt, (ast.Import, ast.ImportFrom)) else ():
                if isinstance(stmt, ast.ImportFrom):
                    bound[f"{stmt.module}.{a.name}"] = a.asname or a.name
                elif a.asname:
                    bound[a.name] = a.asname
                else:
                    bound[a.name.split(".")[0]] = a.name.split(".")[0]
        return bound


def _lines(text: str) -> list[str]:
    """``text`` split after each newline (``str.splitlines`` would split at form feeds too)."""
    return re.findall(r"[^\n]*\n|[^\n]+$", text)


def _name(func) -> str | None:
    """The called name: the last attribute, or the name (``torch.optim.SGD`` -> ``SGD``)."""
    return func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)


def _keyword(call: ast.Call, key: str):
    return next((k.value for k in call.keywords if k.arg == key), None)


def _is_number(node) -> bool:
    return isinstance(node, ast.Constant) and type(node.value) in (int, float)


def _is_int(node) -> bool:
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        node = node.operand
    return isinstance(node, ast.Constant) and type(node.value) is int


def _root_name(node) -> str | None:
    while isinstance(node, (ast.Attribute, ast.Subscript, ast.Call)):
        node = node.func if isinstance(node, ast.Call) else node.value
    return getattr(node, "id", None)


def _bindings(scope, name: str) -> list:
    """The nodes binding ``name`` in ``scope`` itself (not in nested functions, classes,
    comprehensions)."""
    found = []
    if isinstance(scope, _FUNCTIONS):
        a = scope.args
        found += [x for x in (*a.posonlyargs, *a.args, *a.kwonlyargs, a.vararg, a.kwarg)
                  if x and x.arg == name]
    stack = list(scope.body)
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Name) and node.id == name and not isinstance(node.ctx, ast.Load):
            found.append(node)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            found += [a for a in node.names if (a.asname or a.name.split(".")[0]) == name]
        elif isinstance(node, (*_FUNCTIONS, ast.ClassDef)) and node.name == name:
            found.append(node)
        if not isinstance(node, _SCOPES):
            stack.extend(ast.iter_child_nodes(node))
    return found


def _reachable(script: _Script, node, where) -> bool:
    """Whether the names of expression ``node`` mean the same thing at ``where``."""
    here, there = script.scope(where), script.scope(node)
    root = _root_name(node)
    if here is there:
        return True
    if root == "self":
        return script.enclosing(node, ast.ClassDef) is script.enclosing(where, ast.ClassDef)
    return there is script.tree and not _bindings(here, root)


# --- learning rate, weight decay ------------------------------------------------------------

def _factor(text: str) -> float | None:
    try:
        factor = float(text)
    except ValueError:
        return None
    return factor if math.isfinite(factor) and factor > 0 else None


def _optimizer_calls(script: _Script, info: dict) -> list[ast.Call]:
    """The optimizer constructions, only those of ``info["optimizer_class"]`` when given."""
    wanted = str(info.get("optimizer_class") or "").rsplit(".", 1)[-1]
    return [c for c in script.calls(*OPTIMIZERS) if not wanted or _name(c.func) == wanted]


def _scale_setting(script: _Script, key: str, factor: float, info: dict):
    """Scale the ``lr``/``weight_decay`` number literal behind each optimizer construction."""
    if key == "lr" and script.calls("OneCycleLR", "CyclicLR"):
        return None  # these schedulers overwrite the optimizer's learning rate
    targets, count = {}, 0
    for call in _optimizer_calls(script, info):
        value = _keyword(call, key)
        if value is None and key == "lr" and len(call.args) > 1:
            value = call.args[1]
        found = value is not None and _literal(script, value, key)
        if found and found[0].value:
            targets[found[0]] = found[1]
            count += 1
    edits, parts = [], []
    for node, label in targets.items():
        old = script.text(node)
        new = _format_number(node.value * factor, old)
        edits.append((*script.span(node), new))
        parts.append(f"{label}={old} -> {label}={new} (line {node.lineno})")
    summary = "; ".join(parts) + (f" (all {count} optimizers)" if count > 1 else "")
    return (edits, summary) if edits else None


def _literal(script: _Script, node, label: str, depth: int = 0):
    """(number literal, label) behind ``node``: the literal itself, a name bound once to it, or the
    default of the argparse option it reads; else None."""
    if _is_number(node):
        return node, label
    if depth > 3:
        return None
    if isinstance(node, ast.Name):
        value = script.assigned_value(node)
        return value is not None and _literal(script, value, node.id, depth + 1)
    if isinstance(node, ast.Attribute):
        default = _argparse_default(script, node.attr)
        return default is not None and _literal(script, default[0], f"{default[1]} default", depth + 1)
    return None


def _argparse_default(script: _Script, dest: str):
    """(default value, option string) of the one ``add_argument`` call storing to ``dest``."""
    hits = []
    for call in script.calls("add_argument"):
        flags = [a.value for a in call.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]
        flags = [f for f in flags if f.startswith("--")] or flags
        explicit = _keyword(call, "dest")
        default = _keyword(call, "default")
        if not flags or default is None:
            continue
        name = flags[0].lstrip("-").replace("-", "_")
        if (explicit.value if isinstance(explicit, ast.Constant) else name) == dest:
            hits.append((default, flags[0]))
    return hits[0] if len(hits) == 1 else None


def _format_number(value: float, original: str) -> str:
    """``value`` without float noise (12 significant digits), in scientific notation when
    ``original`` was written so: 0.30000000000000004 -> 0.3, 1e-05 -> 1e-5."""
    if re.fullmatch(r"[\d_.]+[eE][+-]?\d+", original):
        mantissa, exponent = f"{value:.11e}".split("e")
        e = "E" if "E" in original else "e"
        return f"{mantissa.rstrip('0').rstrip('.')}{e}{int(exponent)}"
    return re.sub(r"e(-?)\+?0*(\d)", r"e\1\2", repr(float(f"{value:.12g}")))


# --- optimizer steps: zero_grad, gradient clipping --------------------------------------------

def _steps(script: _Script) -> list[tuple[ast.stmt, str, str | None]]:
    """(statement, optimizer text, scaler text or None) of each ``<opt>.step(...)`` or
    ``<scaler>.step(<opt>)`` statement; optimizers are the names assigned from an optimizer
    construction, or named like one (``opt``, ``optimizer_g``, ``self.optim``)."""
    known = {target for target, _ in script.constructed(OPTIMIZERS)}

    def is_optimizer(node) -> bool:
        text = script.text(node)
        return text in known or bool(_OPT_NAME.search(text.rsplit(".", 1)[-1]))

    found = []
    for call in script.calls("step"):
        stmt, receiver = script.parent[call], getattr(call.func, "value", None)
        if not isinstance(stmt, ast.Expr) or receiver is None:
            continue
        if is_optimizer(receiver):
            found.append((stmt, script.text(receiver), None))
        elif len(call.args) == 1 and is_optimizer(call.args[0]):
            found.append((stmt, script.text(call.args[0]), script.text(receiver)))
    return found


def _zero_grad(script: _Script, info: dict):
    """Add ``<opt>.zero_grad()`` after each optimizer step of a script that never clears gradients."""
    if script.calls("zero_grad"):
        return None
    edits, parts = [], []
    for stmt, opt, _ in _steps(script):
        edit = script.insert_after(stmt, [f"{opt}.zero_grad()"])
        if edit:
            edits.append(edit)
            parts.append(f"add {opt}.zero_grad() after {script.text(stmt)} (line {stmt.end_lineno})")
    return (edits, "; ".join(parts)) if edits else None


def _clip(script: _Script, info: dict):
    """Add ``clip_grad_norm_(<params>, 1.0)`` before each optimizer step (after unscaling the
    gradients when a GradScaler steps), importing torch if needed."""
    steps = _steps(script)
    if not steps or script.calls("clip_grad_norm_", "clip_grad_norm", "clip_grad_value_"):
        return None
    clip, edits = _clip_function(script)
    unscaled = bool(script.calls("unscale_"))
    parts = []
    for stmt, opt, scaler in steps:
        lines = [f"{clip}({_clipped_params(script, opt, stmt)}, 1.0)"]
        if scaler and not unscaled:
            lines.insert(0, f"{scaler}.unscale_({opt})")
        edit = script.insert_before(stmt, lines)
        if edit:
            edits.append(edit)
            parts.append(f"clip the gradient norm to 1.0 before {script.text(stmt)} (line {stmt.lineno})")
    return (edits, "; ".join(parts)) if parts else None


def _clip_function(script: _Script) -> tuple[str, list]:
    """How the script can name ``clip_grad_norm_``, and the edit adding ``import torch`` if needed."""
    bound = script.imports()
    for module, rest in (("torch", ".nn.utils.clip_grad_norm_"), ("torch.nn", ".utils.clip_grad_norm_"),
                         ("torch.nn.utils", ".clip_grad_norm_"), ("torch.nn.utils.clip_grad_norm_", "")):
        if module in bound:
            return bound[module] + rest, []
    body = script.tree.body
    imports = [s for s in body if isinstance(s, (ast.Import, ast.ImportFrom))]
    if imports:
        return "torch.nn.utils.clip_grad_norm_", [script.insert_after(imports[-1], ["import torch"])]
    docstring = isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
    edit = (script.insert_after if docstring else script.insert_before)(body[0], ["import torch"])
    return "torch.nn.utils.clip_grad_norm_", [edit] if edit else []


def _constructor_params(script: _Script, opt: str):
    """The first argument of the construction assigned to ``opt`` (None if not found)."""
    call = next((c for target, c in script.constructed(OPTIMIZERS) if target == opt), None)
    return call and (call.args[0] if call.args else _keyword(call, "params"))


def _parameter_calls(script: _Script, node) -> list[ast.Call]:
    """The ``.parameters()`` / ``.named_parameters()`` calls in ``node`` (or in the value a name
    ``node`` is bound to)."""
    if isinstance(node, ast.Name):
        node = script.assigned_value(node)
    return [] if node is None else [
        n for n in ast.walk(node) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
        and n.func.attr in ("parameters", "named_parameters")]


def _clipped_params(script: _Script, opt: str, where) -> str:
    """``<model>.parameters()`` when ``opt`` was built from one model's parameters reachable at
    ``where``, else all parameters of ``opt``'s groups."""
    calls = _parameter_calls(script, _constructor_params(script, opt))
    receivers = {script.text(c.func.value) for c in calls}
    if len(receivers) == 1 and _reachable(script, calls[0], where):
        return f"{receivers.pop()}.parameters()"
    return f'[p for g in {opt}.param_groups for p in g["params"]]'


# --- missing parameters ---------------------------------------------------------------------

def _add_missing(script: _Script, info: dict):
    """Give the optimizer all parameters of the root module its parameter list is taken from
    (``model`` for ``model.features.parameters()``)."""
    calls = _optimizer_calls(script, info)
    if len(calls) != 1:
        return None
    arg = calls[0].args[0] if calls[0].args else _keyword(calls[0], "params")
    found = _parameter_calls(script, arg)
    if not found or any(not _reachable(script, c, arg) for c in found):
        return None
    source = script.assigned_value(arg) if isinstance(arg, ast.Name) else arg
    if any(isinstance(n, ast.Dict) or (isinstance(n, ast.Call) and _name(n.func) == "dict")
           for n in ast.walk(source)):
        return None  # param groups: their own settings would be lost
    roots = {_root_module(script, c.func.value) for c in found}
    if len(roots) != 1 or None in roots:
        return None
    old, new = script.text(arg), f"{roots.pop()}.parameters()"
    if old == new:
        return None
    missing = list(info.get("missing") or [])
    more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
    adding = f", adding {', '.join(missing[:3])}{more}" if missing else ""
    shown = textwrap.shorten(old, 50, placeholder="...")
    summary = f"optimizer params {shown} -> {new} (line {arg.lineno})"
    return [(*script.span(arg), new)], summary + adding


def _root_module(script: _Script, node) -> str | None:
    """The module a parameter owner hangs from: ``model`` for ``model.features[0]``, and
    ``self.<attr>`` for ``self.<attr>...`` outside a subclass of ``nn.Module``."""
    chain = []
    while isinstance(node, (ast.Attribute, ast.Subscript, ast.Call)):
        if isinstance(node, ast.Attribute):
            chain.append(node)
        node = node.func if isinstance(node, ast.Call) else node.value
    if not isinstance(node, ast.Name):
        return None
    cls = script.enclosing(node, ast.ClassDef)
    in_module = cls is not None and any(script.text(b).endswith("Module") for b in cls.bases)
    return script.text(chain[-1]) if node.id == "self" and chain and not in_module else node.id


# --- constant initialisation ----------------------------------------------------------------

def _constant_inits(script: _Script) -> list[ast.Expr]:
    """Statements setting weights to a constant: ``nn.init.zeros_/ones_/constant_(w, ...)``,
    ``w.zero_()``, ``w.fill_(c)`` (also on ``.data``). Biases and gradients are left alone."""
    found = []
    for stmt in ast.walk(script.tree):
        call = stmt.value if isinstance(stmt, ast.Expr) else None
        if not isinstance(call, ast.Call) or not isinstance(call.func, ast.Attribute):
            continue
        func = call.func
        if func.attr in _CONSTANT_INITS and _name(func.value) == "init" and call.args:
            target, strict = call.args[0], False
        elif func.attr in ("zero_", "fill_"):
            target, strict = func.value, True
        else:
            continue
        data = isinstance(target, ast.Attribute) and target.attr == "data"
        base = target.value if data else target
        attr = getattr(base, "attr", None)
        if attr in ("bias", "grad"):
            continue
        if not strict or data or attr == "weight" or _iterates_parameters(script, base):
            found.append(stmt)
    return sorted(found, key=lambda n: n.lineno)


def _iterates_parameters(script: _Script, node) -> bool:
    """Whether name ``node`` is the target of an enclosing loop over ``.parameters()``."""
    loop = script.enclosing(node, (ast.For, ast.AsyncFor))
    while loop is not None and isinstance(node, ast.Name):
        if node.id in {n.id for n in ast.walk(loop.target) if isinstance(n, ast.Name)}:
            return any(_name(c.func) in ("parameters", "named_parameters")
                       for c in ast.walk(loop.iter) if isinstance(c, ast.Call))
        loop = script.enclosing(loop, (ast.For, ast.AsyncFor))
    return False


def _reinit(script: _Script, info: dict):
    """Delete the constant initialisations (and the loops/blocks they leave empty), so that the
    layers keep PyTorch's default initialisation; an emptied function body becomes ``pass``."""
    inits = _constant_inits(script)
    doomed = set(inits)
    grown = True
    while grown:
        grown = False
        for node in ast.walk(script.tree):
            if (isinstance(node, _COMPOUND) and node not in doomed and all(s in doomed for s in node.body)
                    and not getattr(node, "orelse", None)
                    and not script.src.startswith("elif", script.pos(node.lineno, node.col_offset))):
                doomed.add(node)
                grown = True
    edits = []
    for stmt in (s for s in doomed if script.parent[s] not in doomed):
        parent = script.parent[stmt]
        block = next(b for b in (getattr(parent, f, None) for f in ("body", "orelse", "finalbody"))
                     if isinstance(b, list) and stmt in b)
        if block[0] is stmt and all(s in doomed for s in block):
            if script.alone(stmt):   # the whole lines, so that no trailing comment stays on the pass
                edits.append((*script.delete_lines(stmt)[:2], script.indent(stmt) + "pass" + script.nl))
            else:
                edits.append((*script.span(stmt), "pass"))
        elif script.alone(stmt):
            edits.append(script.delete_lines(stmt))
        else:
            return None
    if not edits:
        return None
    return edits, "remove " + "; ".join(f"{script.text(s)} (line {s.lineno})" for s in inits)


# --- softmax before the loss ----------------------------------------------------------------

def _remove_softmax(script: _Script, info: dict):
    """Drop the softmax a model applies to logits that go into a cross-entropy loss: on a
    ``return`` of ``forward``, or as the last layer of an ``nn.Sequential``."""
    if not script.calls("CrossEntropyLoss", "cross_entropy") or script.calls("nll_loss", "NLLLoss"):
        return None
    softmax_modules = {target for target, _ in script.constructed({"Softmax"})}
    edits, parts = [], []
    for fn in ast.walk(script.tree):
        if not (isinstance(fn, _FUNCTIONS) and fn.name == "forward"):
            continue
        for ret in ast.walk(fn):
            logits = isinstance(ret, ast.Return) and _softmax_input(script, ret.value, softmax_modules)
            if logits:
                edits.append((*script.span(ret.value), script.text(logits)))
                parts.append(f"return {script.text(ret.value)} -> {script.text(logits)} (line {ret.lineno})")
    for call in script.calls("Sequential"):
        items = sorted(call.args + call.keywords, key=lambda n: (n.lineno, n.col_offset))
        last = call.args[-1] if call.args else None
        if (len(items) > 1 and last is items[-1] and isinstance(last, ast.Call)
                and _name(last.func) == "Softmax"):
            edits.append(_remove_item(script, items, len(items) - 1))
            parts.append(f"remove {script.text(last)} from the nn.Sequential (line {last.lineno})")
    return (edits, "; ".join(parts)) if edits else None


def _softmax_input(script: _Script, expr, modules: set[str]):
    """``x`` for ``x.softmax(dim)``, ``F.softmax(x, dim)``, ``torch.softmax(x, dim)`` or
    ``self.softmax(x)`` (an ``nn.Softmax``); else None."""
    if not isinstance(expr, ast.Call):
        return None
    func = expr.func
    if script.text(func) in modules:
        return expr.args[0] if len(expr.args) == 1 and not expr.keywords else None
    if _name(func) != "softmax":
        return None
    receiver = func.value if isinstance(func, ast.Attribute) else None
    if receiver is None or _root_name(receiver) in script.imports().values():
        return expr.args[0] if expr.args else _keyword(expr, "input")
    if all(_is_int(a) for a in expr.args) and {k.arg for k in expr.keywords} <= {"dim", "dtype"}:
        return receiver
    return None


def _remove_item(script: _Script, items: list, i: int) -> tuple[int, int, str]:
    """An edit removing item ``i`` of a call's arguments ``items`` (in source order), with its comma:
    its lines when it has them to itself, else the text from the previous (or to the next) item."""
    if script.alone(items[i]):
        return script.delete_lines(items[i])
    start, end = script.span(items[i])
    return (script.span(items[i - 1])[1], end, "") if i else (start, script.span(items[1])[0], "")


# --- SGD to Adam ----------------------------------------------------------------------------

def _sgd_to_adam(script: _Script, info: dict):
    """Turn each ``SGD(...)`` into ``Adam(..., lr=1e-3)``, dropping SGD-only keywords."""
    edits, parts = [], []
    for call in script.calls("SGD"):
        params = call.args[0] if call.args else _keyword(call, "params")
        if (params is None or len(call.args) > 2 or any(k.arg is None for k in call.keywords)
                or any(isinstance(a, ast.Starred) for a in call.args)):
            return None
        if isinstance(call.func, ast.Name) and not _import_adam(script, edits):
            return None
        end = script.span(call.func)[1]
        edits.append((end - len("SGD"), end, "Adam"))
        items = sorted(call.args + call.keywords, key=lambda n: (n.lineno, n.col_offset))
        dropped = [k.arg for k in call.keywords if k.arg in _SGD_ONLY]
        edits += [_remove_item(script, items, i) for i, k in enumerate(items)
                  if isinstance(k, ast.keyword) and k.arg in _SGD_ONLY]
        lr = _keyword(call, "lr") or (call.args[1] if len(call.args) > 1 else None)
        at = script.span(params)[1]
        edits.append((*script.span(lr), "1e-3") if lr else (at, at, ", lr=1e-3"))
        parts.append(f"{script.text(call.func)} -> {script.text(call.func)[:-3]}Adam with lr=1e-3"
                     + (f", without {', '.join(dropped)}" if dropped else "") + f" (line {call.lineno})")
    return (edits, "; ".join(parts)) if edits else None


def _import_adam(script: _Script, edits: list) -> bool:
    """Make the bare name ``Adam`` available: already bound, or added next to ``SGD`` in its
    ``from torch.optim import`` (the edit is appended to ``edits``)."""
    if _bindings(script.tree, "Adam"):
        return True
    for stmt in script.tree.body:
        if isinstance(stmt, ast.ImportFrom) and stmt.module == "torch.optim":
            for alias in stmt.names:
                if alias.name == "SGD" and not alias.asname:
                    end = script.span(alias)[1]
                    edits.append((end, end, ", Adam"))
                    return True
    return False


# --- eval mode during evaluation ------------------------------------------------------------

def _eval_mode(script: _Script, info: dict):
    """Put the model in eval mode at the start of each ``torch.no_grad()``/``inference_mode()``
    block (in a loop or function) that calls it, and back in train mode after the block."""
    if script.calls("eval"):
        return None
    models = {script.text(c.func.value) for c in script.calls("parameters", "named_parameters", "train")
              if isinstance(c.func, ast.Attribute)}
    restore = not script.calls("train")
    edits, parts = [], []
    for node in ast.walk(script.tree):
        if not (_is_no_grad_block(node) and script.enclosing(node, _LOOPS)):
            continue
        called = sorted((c for s in node.body for c in ast.walk(s)
                         if isinstance(c, ast.Call) and script.text(c.func) in models),
                        key=lambda c: (c.lineno, c.col_offset))
        names = list(dict.fromkeys(script.text(c.func) for c in called))
        before = names and script.insert_before(node.body[0], [f"{m}.eval()" for m in names])
        after = script.insert_after(node, [f"{m}.train()" for m in names]) if restore else None
        if before and (after or not restore):
            edits += [before] + ([after] if after else [])
            parts.append(f"{' and '.join(names)} in eval mode in the block at line {node.lineno}"
                         + (", train mode after it" if restore else ""))
    return (edits, "; ".join(parts)) if edits else None


def _is_no_grad_block(node) -> bool:
    return isinstance(node, (ast.With, ast.AsyncWith)) and any(
        isinstance(i.context_expr, ast.Call) and _name(i.context_expr.func) in ("no_grad", "inference_mode")
        for i in node.items)


_REWRITES = {
    "zero_grad_each_step": _zero_grad,
    "clip_grad_norm": _clip,
    "add_missing_params": _add_missing,
    "reinit_layers": _reinit,
    "loss_gets_logits": _remove_softmax,          # the softmax before CE, as a source edit
    "sgd_to_adam": _sgd_to_adam,
    "eval_mode_for_evaluation": _eval_mode,
}
