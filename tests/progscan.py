"""Which external programs does the source run? Read from the source with ``ast``, not by running it.

Seen: ``subprocess`` (run, Popen, call, check_call, check_output, getoutput, getstatusoutput, and
``shell=True``), ``os`` (system, popen, exec*, spawn*, posix_spawn*), asyncio's
create_subprocess_exec/_shell, ``shutil.which`` (a program looked for is a program used), ``sh -c``
lines and ``ip netns exec NS PROGRAM``, under any import alias. The program name is followed
through string constants (also imported ones), local variables, loops over literals, list
concatenation, conditionals and f-strings. Wrappers are found by themselves: a function that passes
one of its parameters on as the program (``proc.run(ns, *argv)``, ``proc.spawn(ns, argv, log)``, a
lab's ``_spawn``, a wrapper of those) becomes a runner, and its callers are scanned (until nothing
new turns up). What still cannot be told (a program taken from an attribute, a computed shell
command, a runner passed around as a value) is reported as unresolved.

Not seen: shell lines handed to the real-kernel guest (``vm.run``) and programs that a dependency
runs (virtme-ng runs qemu, busybox, ``file``): the registry lists those with ``via``.
"""

from __future__ import annotations

import ast
import os
import re
import shlex
from dataclasses import dataclass

# how a callee names the program: (kind, positional index, keyword)
Spec = tuple[str, int | None, str | None]
# callee -> (kind, where): "argv" argv list at positional index / keyword; "varargs" the program
# is the first of *args from that index; "shell" a shell line; "prog" the program name itself
RUNNERS: dict[str, Spec] = {
    **{f"subprocess.{f}": ("argv", 0, "args") for f in ("run", "Popen", "call", "check_call", "check_output")},
    "subprocess.getoutput": ("shell", 0, "cmd"), "subprocess.getstatusoutput": ("shell", 0, "cmd"),
    "os.system": ("shell", 0, "command"), "os.popen": ("shell", 0, "cmd"),
    **{f"os.exec{s}": ("prog", 0, None) for s in ("l", "le", "lp", "lpe", "v", "ve", "vp", "vpe")},
    **{f"os.spawn{s}": ("prog", 1, None) for s in ("l", "le", "lp", "lpe", "v", "ve", "vp", "vpe")},
    "os.posix_spawn": ("prog", 0, "path"), "os.posix_spawnp": ("prog", 0, "path"),
    "asyncio.create_subprocess_exec": ("prog", 0, "program"),
    "asyncio.create_subprocess_shell": ("shell", 0, "cmd"),
    "shutil.which": ("prog", 0, "cmd"),
}
SHELLS = {"sh", "bash", "dash"}
_HOLE = "\x00"  # a part of an f-string whose value cannot be told
_SPECIAL = {"sys.executable": "python3"}


@dataclass(frozen=True)
class Found:
    path: str
    line: int
    program: str


@dataclass(frozen=True)
class Unresolved:
    path: str
    line: int
    function: str  # qualified name of the enclosing function
    reason: str


class _Unknown(Exception):
    pass


class _Param(_Unknown):
    """The program is a parameter of the enclosing function: that function is a wrapper."""

    def __init__(self, function: str, method: bool, index: int | None, name: str, vararg: bool,
                 mode: str = "prog") -> None:
        super().__init__(f"{name} is a parameter of {function}")
        self.function, self.method, self.index, self.name, self.vararg, self.mode = (
            function, method, index, name, vararg, mode)

    def as_mode(self, mode: str) -> _Param:
        return _Param(self.function, self.method, self.index, self.name, self.vararg, mode)

    @property
    def spec(self) -> Spec:
        return (self.mode, self.index, self.name)


def module_name(path: str, root: str) -> str:
    rel = os.path.splitext(os.path.relpath(path, root))[0].split(os.sep)
    return ".".join(rel[:-1] if rel[-1] == "__init__" else rel)


def _constants(tree: ast.Module) -> dict[str, str]:
    out = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            for t in node.targets:
                if isinstance(t, ast.Name):
                    out[t.id] = node.value.value
    return out


def _sequences(tree: ast.Module) -> dict[str, tuple[str, ...]]:
    """Module-level tuples and lists of strings (names a loop may run through)."""
    out = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, (ast.Tuple, ast.List)) and \
                all(_const(e) is not None for e in node.value.elts):
            for t in node.targets:
                if isinstance(t, ast.Name):
                    out[t.id] = tuple(e.value for e in node.value.elts)  # type: ignore[attr-defined]
    return out


def _module_level(tree: ast.Module):
    """The module's nodes outside function and class bodies (their names are other variables)."""
    todo: list[ast.AST] = list(tree.body)
    while todo:
        node = todo.pop()
        yield node
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
            todo.extend(ast.iter_child_nodes(node))


def _own_nodes(fn: ast.AST):
    """A function's nodes, nested functions and classes left out."""
    todo = list(ast.iter_child_nodes(fn))
    while todo:
        node = todo.pop()
        yield node
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
            todo.extend(ast.iter_child_nodes(node))


def _builtin(node: ast.expr) -> str | None:
    return node.id if isinstance(node, ast.Name) else None


def _aliases(tree: ast.Module, module: str, is_pkg: bool) -> dict[str, str]:
    """Local name -> what it stands for, fully qualified (modules and imported names)."""
    out = {}
    parts = module.split(".") if is_pkg else module.split(".")[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.asname:
                    out[a.asname] = a.name
                else:
                    out[a.name.split(".")[0]] = a.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                keep = parts[:len(parts) - node.level + 1] if node.level > 1 else parts
                base = ".".join([*keep, *([node.module] if node.module else [])])
            for a in node.names:
                out[a.asname or a.name] = f"{base}.{a.name}" if base else a.name
    return out


@dataclass
class _Context:
    """What every module's scan shares."""

    trees: dict[str, tuple[str, ast.Module]]  # path -> (module, tree)
    static: dict[str, tuple]  # path -> (constants, sequences, aliases)
    table: dict[str, str]  # qualified name -> string constant, every module
    funcs: dict[str, tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]]  # module-level functions
    wrappers: dict[str, set[Spec]]
    methods: dict[str, set[Spec]]  # wrapper methods by bare name


class _Scanner(ast.NodeVisitor):
    def __init__(self, path: str, ctx: _Context, depth: int = 0) -> None:
        self.path, self.ctx, self.depth = path, ctx, depth
        self.module, self.tree = ctx.trees[path]
        self.table, self.wrappers, self.methods = ctx.table, ctx.wrappers, ctx.methods
        self.params: list[_Param] = []  # wrappers found in this module
        self.consts, self.seqs, self.alias = ctx.static[path]
        self.found: list[Found] = []
        self.unresolved: list[Unresolved] = []
        self.stack: list[ast.AST] = []  # enclosing classes and functions
        self.called: set[int] = set()  # ids of callee nodes handled as calls

    # -- names -----------------------------------------------------------------------------
    def qualify(self, node: ast.expr) -> str | None:
        if isinstance(node, ast.Name):
            if node.id in self.alias:
                return self.alias[node.id]
            return f"{self.module}.{node.id}"
        if isinstance(node, ast.Attribute):
            if isinstance(node.value, ast.Name) and node.value.id == "self":
                cls = next((n.name for n in reversed(self.stack) if isinstance(n, ast.ClassDef)), "")
                return f"{self.module}.{cls}.{node.attr}"
            base = self.qualify(node.value)
            return f"{base}.{node.attr}" if base else None
        return None

    def function(self) -> str:
        names = [n.name for n in self.stack if isinstance(n, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))]
        return ".".join([self.module, *names])

    def _func(self) -> ast.FunctionDef | ast.AsyncFunctionDef | None:
        return next((n for n in reversed(self.stack) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))), None)

    def _assigned(self, name: str) -> list[ast.expr] | None:
        """Every value the enclosing function binds ``name`` to (for-loops over literals included);
        None when it binds nothing (then module and imported constants are tried)."""
        fn = self._func()
        values: list[ast.expr] = []
        for node in ast.walk(fn) if fn is not None else _module_level(self.tree):
            if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
                values.append(node.value)
            elif isinstance(node, (ast.AnnAssign, ast.NamedExpr)) and isinstance(node.target, ast.Name) \
                    and node.target.id == name and node.value is not None:
                values.append(node.value)
            elif isinstance(node, ast.For) and isinstance(node.target, ast.Name) and node.target.id == name:
                if isinstance(node.iter, (ast.Tuple, ast.List)):
                    values.extend(node.iter.elts)
                elif isinstance(node.iter, ast.Name) and node.iter.id in self.seqs:
                    values.extend(ast.Constant(v) for v in self.seqs[node.iter.id])
                else:
                    raise _Unknown(f"{name} iterates over something not literal")
        if values or fn is None:
            return values or None
        a = fn.args
        positional = [x.arg for x in [*a.posonlyargs, *a.args]]
        method = len(self.stack) >= 2 and self.stack[-1] is fn and isinstance(self.stack[-2], ast.ClassDef)
        if method and positional[:1] in (["self"], ["cls"]):
            positional = positional[1:]
        if name in positional:
            raise _Param(self.function(), method, positional.index(name), name, False)
        if a.vararg is not None and name == a.vararg.arg:
            raise _Param(self.function(), method, len(positional), name, True)
        if name in {x.arg for x in a.kwonlyargs}:
            raise _Param(self.function(), method, None, name, False)
        if a.kwarg is not None and name == a.kwarg.arg:
            raise _Unknown(f"{name} is the **kwargs of {fn.name}")
        return None

    # -- values ----------------------------------------------------------------------------
    def strings(self, node: ast.expr) -> set[str]:
        """The string values an expression can have."""
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return {node.value}
        if isinstance(node, ast.Name):
            values = self._assigned(node.id)
            if values is not None:
                return set().union(*(self.strings(v) for v in values))
            if node.id in self.consts:
                return {self.consts[node.id]}
        q = self.qualify(node) if isinstance(node, (ast.Name, ast.Attribute)) else None
        if q in _SPECIAL:
            return {_SPECIAL[q]}
        if q in self.table:
            return {self.table[q]}
        if isinstance(node, ast.IfExp):
            return self.strings(node.body) | self.strings(node.orelse)
        if isinstance(node, ast.BoolOp):
            return set().union(*(self.strings(v) for v in node.values))
        if isinstance(node, ast.JoinedStr):
            return {self.render(node)}
        if isinstance(node, ast.Call):
            fq = self.qualify(node.func)
            if fq == "shutil.which" and node.args:  # the path of a program stands for the program
                return self.strings(node.args[0])
            if fq == "os.path.join" and node.args:
                return {os.path.basename(s) for s in self.strings(node.args[-1])}
            if _builtin(node.func) == "str" and node.args:
                return self.strings(node.args[0])
            if fq in self.ctx.funcs and self.depth < 4:
                return self.returns(fq)
        raise _Unknown(f"cannot tell the value of {ast.unparse(node)!r}")

    def returns(self, fq: str) -> set[str]:
        """The strings a scanned module-level function can return (``None`` left out): a helper that
        finds a program's path stands for that program."""
        path, fn = self.ctx.funcs[fq]
        inner = _Scanner(path, self.ctx, self.depth + 1)
        inner.stack = [fn]
        values: set[str] = set()
        try:
            for node in _own_nodes(fn):
                if isinstance(node, ast.Return) and node.value is not None and \
                        not (isinstance(node.value, ast.Constant) and node.value.value is None):
                    values |= inner.strings(node.value)
        except _Param as p:  # it returns its argument: not a wrapper of a runner, just unknown here
            raise _Unknown(f"{fq} returns its parameter {p.name}") from None
        if not values:
            raise _Unknown(f"{fq} returns no string")
        return values

    def render(self, node: ast.JoinedStr) -> str:
        out = []
        for v in node.values:
            if isinstance(v, ast.Constant):
                out.append(str(v.value))
                continue
            try:
                s = self.strings(v.value)  # type: ignore[attr-defined]
                out.append(s.pop() if len(s) == 1 else _HOLE)
            except _Unknown:
                out.append(_HOLE)
        return "".join(out)

    def sequences(self, node: ast.expr) -> list[list[ast.expr]]:
        """The element lists an argv expression can be (a Starred element stays as it is)."""
        if isinstance(node, (ast.List, ast.Tuple)):
            return [list(node.elts)]
        if isinstance(node, ast.Name):
            try:
                values = self._assigned(node.id)
            except _Param as p:
                raise p.as_mode("varargs" if p.vararg else "argv") from None
            if values is not None:
                return [seq for v in values for seq in self.sequences(v)]
        if isinstance(node, ast.IfExp):
            return self.sequences(node.body) + self.sequences(node.orelse)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            return [a + b for a in self.sequences(node.left) for b in self.sequences(node.right)]
        if isinstance(node, ast.Call) and _builtin(node.func) in ("list", "tuple") and len(node.args) == 1:
            return self.sequences(node.args[0])
        raise _Unknown(f"cannot tell the argv {ast.unparse(node)!r}")

    def flat(self, elts: list[ast.expr]) -> list[list[ast.expr]]:
        """Expand Starred elements into the sequences they can be."""
        out: list[list[ast.expr]] = [[]]
        for i, e in enumerate(elts):
            if not isinstance(e, ast.Starred):
                out = [pre + [e] for pre in out]
                continue
            try:
                out = [pre + seq for pre in out for seq in self.sequences(e.value)]
            except _Unknown:
                if i == 0:
                    raise
                # only the leading elements name programs: an unknown tail is kept opaque, and is an
                # error only where a program is looked for in it (ip netns exec NS *argv)
                return [pre + [e, *elts[i + 1:]] for pre in out]
        return out

    # -- programs --------------------------------------------------------------------------
    def argv_programs(self, elts: list[ast.expr]) -> set[str]:
        progs: set[str] = set()
        for seq in self.flat(elts):
            if not seq:
                continue
            if isinstance(seq[0], ast.Starred):
                raise _Unknown(f"cannot tell the argv {ast.unparse(seq[0].value)!r}")
            for prog in self.strings(seq[0]):
                progs.add(prog)
                rest = seq[1:]
                # the program inside keeps the one around it: a wrapper's own program is still found
                try:
                    if os.path.basename(prog) in SHELLS and len(rest) >= 2 and _const(rest[0]) == "-c":
                        progs |= self.shell(rest[1])
                    if prog == "ip" and [_const(x) for x in rest[:2]] == ["netns", "exec"] and len(rest) >= 4:
                        progs |= self.argv_programs(rest[3:])
                except _Param as p:
                    self.params.append(p)
        return progs

    def visit_Call(self, node: ast.Call) -> None:
        fq = self.qualify(node.func) or ""
        specs = ({RUNNERS[fq]} if fq in RUNNERS else set()) | self.wrappers.get(fq, set())
        if isinstance(node.func, ast.Name) and not specs:  # a nested wrapper, called in its enclosing function
            scope = self.function().split(".")
            while len(scope) > len(self.module.split(".")) and not specs:
                specs = self.wrappers.get(".".join([*scope, node.func.id]), set())
                scope.pop()
        loose = False
        if not specs and isinstance(node.func, ast.Attribute) and node.func.attr in self.methods:
            # a wrapper method called on another object than self: matched by name, and only where
            # the call has the argument at all (another class's method of that name may not)
            specs, loose = self.methods[node.func.attr], True
        if specs:
            self.called.add(id(node.func))
        for spec in sorted(specs, key=repr):
            try:
                for prog in sorted(self.programs(node, spec, loose)):
                    self.found.append(Found(self.path, node.lineno, prog))
            except _Param as p:
                self.params.append(p)
            except _Unknown as exc:
                self.unresolved.append(Unresolved(self.path, node.lineno, self.function(), str(exc)))
        self.generic_visit(node)

    def shell(self, node: ast.expr) -> set[str]:
        try:
            lines = self.strings(node)
        except _Param as p:
            raise p.as_mode("shell") from None
        return set().union(*(shell_programs(s) for s in lines))

    def programs(self, node: ast.Call, spec: Spec, loose: bool = False) -> set[str]:
        kind, index, kw = spec
        if kind == "varargs":
            return self.argv_programs(node.args[index:]) if index is not None and len(node.args) > index else set()
        arg = node.args[index] if index is not None and len(node.args) > index else next(
            (k.value for k in node.keywords if k.arg == kw), None)
        if arg is None:
            if loose or any(isinstance(a, ast.Starred) for a in node.args):
                return set()
            raise _Unknown("no program argument")
        shell = any(k.arg == "shell" and not (isinstance(k.value, ast.Constant) and k.value.value is False)
                    for k in node.keywords)
        if kind == "shell" or (kind == "argv" and shell):
            return self.shell(arg)
        if kind == "prog":
            return self.strings(arg)
        return set().union(*(self.argv_programs(seq) for seq in self.sequences(arg)))

    def _scope(self, node: ast.AST) -> None:
        self.stack.append(node)
        self.generic_visit(node)
        self.stack.pop()

    visit_FunctionDef = visit_AsyncFunctionDef = visit_ClassDef = _scope

    def check_values(self) -> None:
        """A runner referred to other than by calling it (passed to partial, stored, ...); type
        annotations (``-> subprocess.Popen``) are not uses."""
        todo: list[ast.AST] = [self.tree]
        while todo:
            node = todo.pop()
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                todo.extend([*node.body, *node.decorator_list, *node.args.defaults,
                             *filter(None, node.args.kw_defaults)])
                continue
            if isinstance(node, ast.AnnAssign):
                todo.extend(filter(None, [node.target, node.value]))
                continue
            if isinstance(node, ast.arg):
                continue
            if isinstance(node, (ast.Name, ast.Attribute)) and id(node) not in self.called and \
                    isinstance(node.ctx, ast.Load) and self.qualify(node) in RUNNERS:
                self.unresolved.append(Unresolved(self.path, node.lineno, self.module,
                                                  f"{ast.unparse(node)} used other than by calling it"))
            todo.extend(ast.iter_child_nodes(node))


def _const(node: ast.expr) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def shell_programs(line: str) -> set[str]:
    """The program each command of a shell line starts (assignments, exec and env skipped)."""
    out = set()
    for part in re.split(r"&&|\|\||[;|\n]", line):
        try:
            words = shlex.split(part)
        except ValueError:
            words = part.split()
        while words and (re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", words[0]) or words[0] in ("exec", "env", "command")):
            words.pop(0)
        if not words:
            continue
        if _HOLE in words[0] or words[0].startswith("$"):
            raise _Unknown(f"a shell command whose program is computed: {line!r}")
        out.add(words[0])
    return out


@dataclass
class Scan:
    found: list[Found]
    unresolved: list[Unresolved]
    wrappers: dict[str, set[Spec]]  # qualified name -> how its callers name the program


def scan_sources(sources: dict[str, tuple[str, str]]) -> Scan:
    """sources: path -> (module name, text). Every file is parsed first, so that a constant imported
    from another scanned module resolves; then scanned again while new wrappers turn up."""
    trees = {path: (mod, ast.parse(text, path)) for path, (mod, text) in sources.items()}
    ctx = _Context(
        trees,
        {path: (_constants(tree), _sequences(tree), _aliases(tree, mod, path.endswith("__init__.py")))
         for path, (mod, tree) in trees.items()},
        {f"{mod}.{k}": v for mod, tree in trees.values() for k, v in _constants(tree).items()},
        {f"{mod}.{n.name}": (path, n) for path, (mod, tree) in trees.items() for n in tree.body
         if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))},
        {}, {})
    wrappers, methods = ctx.wrappers, ctx.methods
    for _ in range(20):  # a wrapper of a wrapper of ... is found one level per round
        found, unresolved, new = [], [], False
        for path in trees:
            s = _Scanner(path, ctx)
            s.visit(s.tree)
            found += s.found
            for p in s.params:
                if p.spec not in wrappers.setdefault(p.function, set()):
                    wrappers[p.function].add(p.spec)
                    new = True
                    if p.method:
                        methods.setdefault(p.function.rsplit(".", 1)[1], set()).add(p.spec)
        if not new:
            for path in trees:
                s = _Scanner(path, ctx)
                s.visit(s.tree)
                s.check_values()
                unresolved += s.unresolved
            return Scan(found, unresolved, wrappers)
    raise RuntimeError("wrapper inference did not settle")


def scan_tree(root: str, dirs: tuple[str, ...]) -> Scan:
    sources = {}
    for d in dirs:
        for base, subdirs, files in os.walk(os.path.join(root, d)):
            subdirs[:] = [s for s in subdirs if not s.startswith(".") and s != "__pycache__"]
            for f in files:
                if f.endswith(".py"):
                    path = os.path.join(base, f)
                    with open(path) as fh:
                        sources[os.path.relpath(path, root)] = (module_name(path, root), fh.read())
    return scan_sources(sources)
