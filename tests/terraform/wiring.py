"""What each `module` block in terraform/ passes, judged the way Terraform converts it to the called module's
variable types: an argument the module does not declare, a variable without a default left out, an object
without an attribute its type requires, an attribute the type does not declare (Terraform drops it without a
word), a collection where a primitive belongs. The same for a tfvars file against a root module's variables.

Terraform itself cannot run `validate` here (no providers can be downloaded), so the types are read from the
HCL: variable `type` constraints are parsed (primitives, any, list/set/map/tuple/object, optional(...)), and
a passed value's type is inferred where the HCL shows it: a `var.` reference (its declared type), a literal,
a `for` expression that builds objects, a `local.` of those. What cannot be seen without evaluating (a
module's outputs, function calls) is unknown and passes; terraform test on a provider-free slice covers the
values (tests/terraform/test_terraform.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hcl2 import SerializationOptions
from hcl2 import loads as hcl_loads

OPTS = SerializationOptions(strip_string_quotes=True, explicit_blocks=False)
META_ARGUMENTS = {"source", "version", "providers", "depends_on", "count", "for_each", "__comments__",
                  "__inline_comments__"}  # fmt: skip


@dataclass(frozen=True)
class T:
    """A Terraform type: kind is a primitive (string, number, bool), any, unknown (not inferable), list, set,
    map, tuple or object."""

    kind: str
    elem: T | None = None  # list, set, map
    attrs: dict[str, tuple[T, bool]] = field(default_factory=dict)  # object: name -> (type, optional)
    items: tuple[T, ...] = ()  # tuple

    def __repr__(self) -> str:
        if self.kind == "object":
            return "object({" + ", ".join(f"{k}{'?' if o else ''}={t!r}" for k, (t, o) in self.attrs.items()) + "})"
        if self.elem is not None:
            return f"{self.kind}({self.elem!r})"
        return self.kind


UNKNOWN = T("unknown")
ANY = T("any")
PRIMITIVES = {"string", "number", "bool"}


# -- type constraints ----------------------------------------------------------------------------------------


def _tokens(text: str) -> list[str]:
    return re.findall(r'"(?:[^"\\]|\\.)*"|[A-Za-z_][A-Za-z0-9_-]*|-?[0-9.]+|[(){}\[\],=:]|\S', text)


class _TypeParser:
    def __init__(self, text: str) -> None:
        self.toks = _tokens(text)
        self.i = 0

    def peek(self) -> str:
        return self.toks[self.i] if self.i < len(self.toks) else ""

    def take(self, expected: str | None = None) -> str:
        tok = self.peek()
        if expected is not None and tok != expected:
            raise ValueError(f"expected {expected!r}, got {tok!r} in {' '.join(self.toks)}")
        self.i += 1
        return tok

    def skip_expression(self) -> None:
        """An optional() default: skipped up to the closing parenthesis of optional(...)."""
        depth = 0
        while True:
            tok = self.peek()
            if tok in "({[" and tok:
                depth += 1
            elif tok in ")}]":
                if depth == 0:
                    return
                depth -= 1
            self.take()

    def type(self) -> T:
        name = self.take()
        if name in PRIMITIVES or name == "any":
            return T(name)
        if name in ("list", "set", "map"):
            self.take("(")
            elem = self.type()
            self.take(")")
            return T(name, elem=elem)
        if name == "tuple":
            self.take("(")
            self.take("[")
            items = []
            while self.peek() != "]":
                items.append(self.type())
                if self.peek() == ",":
                    self.take()
            self.take("]")
            self.take(")")
            return T("tuple", items=tuple(items))
        if name == "object":
            self.take("(")
            self.take("{")
            attrs: dict[str, tuple[T, bool]] = {}
            while self.peek() != "}":
                attr = self.take().strip('"')
                self.take("=")
                optional = self.peek() == "optional"
                if optional:
                    self.take()
                    self.take("(")
                    t = self.type()
                    if self.peek() == ",":
                        self.take()
                        self.skip_expression()
                    self.take(")")
                else:
                    t = self.type()
                attrs[attr] = (t, optional)
                if self.peek() == ",":
                    self.take()
            self.take("}")
            self.take(")")
            return T("object", attrs=attrs)
        raise ValueError(f"unknown type {name!r}")


def parse_type(text: str | None) -> T:
    """A variable's `type` as python-hcl2 gives it ("string", "${map(object({a = number}))}"); none is any."""
    if text is None:
        return ANY
    text = text.strip()
    if text.startswith("${") and text.endswith("}"):
        text = text[2:-1]
    parser = _TypeParser(text)
    t = parser.type()
    if parser.peek():
        raise ValueError(f"trailing {parser.peek()!r} in type {text}")
    return t


# -- modules ---------------------------------------------------------------------------------------------------


def _parse(path: Path) -> dict[str, Any]:
    return hcl_loads(path.read_text(), serialization_options=OPTS)


@dataclass
class Module:
    directory: Path
    variables: dict[str, dict[str, Any]]  # name -> body (type, default...)
    locals: dict[str, Any]
    calls: dict[str, dict[str, Any]]  # module block name -> body

    @classmethod
    def load(cls, directory: Path) -> Module:
        variables: dict[str, dict[str, Any]] = {}
        local_values: dict[str, Any] = {}
        calls: dict[str, dict[str, Any]] = {}
        for p in sorted(directory.glob("*.tf")):
            doc = _parse(p)
            for item in doc.get("variable", []):
                variables.update(item)
            for item in doc.get("locals", []):
                local_values.update(item)
            for item in doc.get("module", []):
                calls.update(item)
        return cls(directory, variables, local_values, calls)

    def variable_type(self, name: str) -> T:
        return parse_type(self.variables[name].get("type"))


# -- inferring what a value is -----------------------------------------------------------------------------------


def _split_top(text: str, sep: str) -> list[str]:
    """text split at sep where it is outside brackets and strings."""
    parts, depth, start, in_str, i = [], 0, 0, False, 0
    while i < len(text):
        c = text[i]
        if in_str:
            if c == "\\":
                i += 1
            elif c == '"':
                in_str = False
        elif c == '"':
            in_str = True
        elif c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        elif depth == 0 and text.startswith(sep, i):
            parts.append(text[start:i])
            start = i + len(sep)
            i += len(sep) - 1
        i += 1
    parts.append(text[start:])
    return [p.strip() for p in parts]


def _object_literal(text: str, module: Module) -> T | None:
    """`{a = x, b = y}` (an HCL object constructor as python-hcl2 prints it) -> object(a, b)."""
    if not (text.startswith("{") and text.endswith("}")) or text.startswith("{for "):
        return None
    inner = text[1:-1].strip()
    if not inner:
        return T("object")
    attrs: dict[str, tuple[T, bool]] = {}
    for part in _split_top(inner, ","):
        if not part:
            continue
        key, eq, value = part.partition("=")
        if not eq:
            return None
        attrs[key.strip().strip('"')] = (infer_expression(value.strip(), module), False)
    return T("object", attrs=attrs)


def infer_expression(text: str, module: Module) -> T:
    """The type of an HCL expression, as far as the text shows it."""
    text = text.strip()
    if m := re.fullmatch(r"var\.([A-Za-z_][A-Za-z0-9_-]*)", text):
        return module.variable_type(m[1]) if m[1] in module.variables else UNKNOWN
    if m := re.fullmatch(r"local\.([A-Za-z_][A-Za-z0-9_-]*)(\[[^\]]+\])?", text):
        if m[1] not in module.locals:
            return UNKNOWN
        t = infer_value(module.locals[m[1]], module)
        if m[2] is None:
            return t
        if t.kind in ("map", "list", "set"):
            return t.elem or UNKNOWN
        return UNKNOWN
    if text.startswith("{for ") and text.endswith("}"):
        body = text[len("{for ") : -1]
        _, _, result = body.partition(":")
        # `{for k, v in coll : key => value}`: a map (an object of unknown keys) whose values are `value`.
        if "=>" in result:
            _, _, value = result.partition("=>")
            value = value.strip().removesuffix("...").strip()
            if " if " in value:
                value = _split_top(value, " if ")[0]
            return T("map", elem=infer_expression(value, module))
        return UNKNOWN
    if text.startswith("[for "):
        return T("list", elem=UNKNOWN)
    if (obj := _object_literal(text, module)) is not None:
        return obj
    if re.fullmatch(r'"[^"$]*"', text):
        return T("string")
    if re.fullmatch(r"-?[0-9]+(\.[0-9]+)?", text):
        return T("number")
    if text in ("true", "false"):
        return T("bool")
    return UNKNOWN


def infer_value(value: Any, module: Module) -> T:
    """The type of a value as python-hcl2 parsed it (literals, dicts, lists, or "${expression}")."""
    if isinstance(value, bool):
        return T("bool")
    if isinstance(value, int | float):
        return T("number")
    if isinstance(value, str):
        if value.startswith("${") and value.endswith("}"):
            return infer_expression(value[2:-1], module)
        return T("string")
    if isinstance(value, dict):
        return T("object", attrs={k: (infer_value(v, module), False) for k, v in value.items()
                                  if not k.startswith("__")})  # fmt: skip
    if isinstance(value, list):
        return T("tuple", items=tuple(infer_value(v, module) for v in value))
    return UNKNOWN


def json_type(value: Any) -> T:
    """The type of a JSON value (a tfvars.json file)."""
    if isinstance(value, bool):
        return T("bool")
    if isinstance(value, int | float):
        return T("number")
    if isinstance(value, str):
        return T("string")
    if isinstance(value, dict):
        return T("object", attrs={k: (json_type(v), False) for k, v in value.items()})
    if isinstance(value, list):
        return T("tuple", items=tuple(json_type(v) for v in value))
    return T("null")


# -- conversion ----------------------------------------------------------------------------------------------------


def conversion_errors(want: T, got: T, where: str) -> list[str]:
    """Why a value of type `got` does not convert cleanly to `want` (empty: it does, or it cannot be told)."""
    if want.kind in ("any", "unknown") or got.kind in ("unknown", "any", "null"):
        return []
    if want.kind in PRIMITIVES:
        if got.kind in PRIMITIVES:
            return []  # Terraform converts between primitives (a failure would show at plan, on the value)
        return [f"{where}: a {want.kind} is required, got {got!r}"]
    if want.kind == "object":
        if got.kind == "map":
            # keys unknown: each declared attribute's value must convert from the map's element
            return [e for k, (t, _) in want.attrs.items() for e in conversion_errors(t, got.elem or UNKNOWN,
                                                                                      f"{where}.{k}")]  # fmt: skip
        if got.kind != "object":
            return [f"{where}: an object is required, got {got!r}"]
        errors = [f'{where}: attribute "{k}" is required' for k, (_, optional) in want.attrs.items()
                  if not optional and k not in got.attrs]  # fmt: skip
        errors += [f'{where}: attribute "{k}" is not declared by the type and would be dropped' for k in got.attrs
                   if k not in want.attrs]  # fmt: skip
        for k, (t, _) in want.attrs.items():
            if k in got.attrs:
                errors += conversion_errors(t, got.attrs[k][0], f"{where}.{k}")
        return errors
    if want.kind == "map":
        if got.kind == "map":
            return conversion_errors(want.elem or ANY, got.elem or UNKNOWN, f"{where}[*]")
        if got.kind == "object":
            return [e for k, (t, _) in got.attrs.items() for e in conversion_errors(want.elem or ANY, t,
                                                                                     f'{where}["{k}"]')]  # fmt: skip
        return [f"{where}: a map is required, got {got!r}"]
    if want.kind in ("list", "set"):
        if got.kind in ("list", "set"):
            return conversion_errors(want.elem or ANY, got.elem or UNKNOWN, f"{where}[*]")
        if got.kind == "tuple":
            return [e for i, t in enumerate(got.items) for e in conversion_errors(want.elem or ANY, t,
                                                                                   f"{where}[{i}]")]  # fmt: skip
        return [f"{where}: a {want.kind} is required, got {got!r}"]
    if want.kind == "tuple":
        if got.kind == "tuple" and len(got.items) != len(want.items):
            return [f"{where}: a tuple of {len(want.items)} is required, got {len(got.items)}"]
        return []
    return []


def module_call_errors(caller: Module, name: str) -> list[str]:
    """What `module "name"` in caller passes, against the called module's variables."""
    body = caller.calls[name]
    source = body["source"]
    if not source.startswith("."):
        return []  # a registry module: its variables are not here
    called = Module.load((caller.directory / source).resolve())
    where = f"{caller.directory.name}: module.{name}"
    errors = [f"{where}: no variable {arg!r} in {source}" for arg in body
              if arg not in META_ARGUMENTS and arg not in called.variables]  # fmt: skip
    errors += [f"{where}: variable {var!r} has no default and is not passed" for var, spec in called.variables.items()
               if "default" not in spec and var not in body]  # fmt: skip
    for arg, value in body.items():
        if arg in called.variables:
            errors += conversion_errors(called.variable_type(arg), infer_value(value, caller), f"{where}.{arg}")
    return errors


def tfvars_errors(module: Module, values: dict[str, Any], file: str) -> list[str]:
    """A tfvars.json file's values against a root module's variables."""
    errors = [f"{file}: no variable {k!r}" for k in values if k not in module.variables]
    for k, v in values.items():
        if k in module.variables:
            errors += conversion_errors(module.variable_type(k), json_type(v), f"{file}: {k}")
    return errors
