"""An instrumented copy of a module whose every arithmetic result and every assigned
value is checked against an integer range: the way the tests prove that firmware (and
test helpers that run under MicroPython) stays within small ints on a 31-bit port,
where the unix port's 63-bit ints would hide a value that allocates on the ESP32."""

from __future__ import annotations

import ast
import types

SMALL_29 = (-(1 << 29), 1 << 29)  # the project's rule: every value within +-2^29
SMALL_INT_31 = (-(1 << 30), (1 << 30) - 1)  # a small int on a 31-bit port (the ESP32)


class Bound(Exception):
    """An int outside the checked range: the value is the exception's argument."""


def checker(lo: int, hi: int):
    """_check(v): v unchanged when it is not an int or lies in lo..hi; else Bound."""

    def _check(v):
        if isinstance(v, int) and not isinstance(v, bool) and not lo <= v <= hi:
            raise Bound(v)
        return v

    return _check


class _Wrap(ast.NodeTransformer):
    """Pass every arithmetic result and every assigned value through _check()."""

    def _call(self, node):
        return ast.Call(ast.Name("_check", ast.Load()), [node], [])

    def visit_BinOp(self, node):
        self.generic_visit(node)
        return self._call(node)

    def visit_UnaryOp(self, node):
        self.generic_visit(node)
        return self._call(node)

    def visit_Assign(self, node):
        self.generic_visit(node)
        node.value = self._call(node.value)
        return node

    def visit_AugAssign(self, node):
        self.generic_visit(node)
        target = ast.parse(ast.unparse(node.target), mode="eval").body
        return ast.Assign([node.target], self._call(ast.BinOp(target, node.op, node.value)))


def instrument(source: str, filename: str = "checked"):
    """The source compiled with every result and stored value passed to _check()."""
    tree = ast.fix_missing_locations(_Wrap().visit(ast.parse(source)))
    return compile(tree, filename, "exec")


def load(source: str, name: str, bounds: tuple[int, int] = SMALL_29) -> types.ModuleType:
    """A module made from source, checked against bounds (lo, hi)."""
    module = types.ModuleType(name)
    module._check = checker(*bounds)
    exec(instrument(source, name), module.__dict__)
    return module
