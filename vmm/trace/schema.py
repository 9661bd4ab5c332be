"""Validation against a JSON Schema (draft 2020-12), for the keywords trace-v2.schema.json uses.

The schema file is the one description of a record's fields: readers and tests validate with
it and nothing else. It is compiled once into nested functions; check(value) returns None for
a valid value, else a Problem saying where (a path of keys and indices) and what is wrong.
Integers are JSON numbers without a fraction (1.0 is not an integer here, nor is true).
"""
import json
import re

# Keywords this validator implements; a schema using any other is refused when compiled, so
# the schema cannot ask for a check that silently does not happen.
_KEYWORDS = frozenset(("$schema", "$id", "$defs", "$ref", "title", "description", "type", "enum", "const",
                       "properties", "required", "additionalProperties", "items", "prefixItems", "minItems",
                       "maxItems", "pattern", "minLength", "maxLength", "minimum", "maximum", "allOf", "anyOf",
                       "if", "then"))
_TYPES = {"object": (dict,), "array": (list,), "string": (str,), "integer": (int,), "number": (int, float),
          "boolean": (bool,), "null": (type(None),)}
_KIND = {dict: "an object", list: "an array", str: "a string", int: "an integer", float: "a number",
         bool: "a boolean", type(None): "null"}
# The keyword groups that apply to one kind of value, and the JSON types that are that kind.
_GROUPS = {"string": ("string",), "number": ("integer", "number"), "array": ("array",), "object": ("object",)}
_TYPE_WORDS = {"object": "an object", "array": "an array", "string": "a string", "integer": "an integer",
               "number": "a number", "boolean": "a boolean", "null": "null"}


class Problem:
    """Why a value does not match: the message and where (innermost step first)."""

    __slots__ = ("message", "_path")

    def __init__(self, message):
        self.message = message
        self._path = []

    def at(self, step):
        """The same problem one level up: inside key or index `step`."""
        self._path.append(step)
        return self

    @property
    def where(self):
        """The path as `regs.rax` or `pages[0][1]`."""
        text = ""
        for step in reversed(self._path):
            text += f"[{step}]" if isinstance(step, int) else f".{step}" if text else step
        return text

    def __str__(self):
        return f"{self.where}: {self.message}" if self._path else self.message


def shown(value, limit=40):
    """A value as JSON, cut short for a message."""
    text = json.dumps(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _valid(value):
    return None


def _type_problem(expected, value):
    return Problem(f"expected {expected}, got {_KIND.get(type(value), 'a value')} {shown(value)}")


class Schema:
    """A schema document; validator(pointer) compiles the (sub)schema at a JSON pointer."""

    def __init__(self, document):
        self._document = document
        self._compiled = {}

    @classmethod
    def load(cls, path):
        with open(path, encoding="utf-8") as source:
            return cls(json.load(source))

    def validator(self, pointer="#"):
        compiled = self._compiled.get(pointer)
        if compiled is None:
            late = []   # a $ref met again while compiling this one calls through the cell
            self._compiled[pointer] = lambda value: late[0](value)
            late.append(self._compile(self.resolve(pointer)))
            compiled = self._compiled[pointer] = late[0]
        return compiled

    def resolve(self, pointer):
        if not pointer.startswith("#"):
            raise ValueError(f"schema reference {pointer!r}: only references inside the document are supported")
        node = self._document
        for part in filter(None, pointer[1:].split("/")):
            node = node[part.replace("~1", "/").replace("~0", "~")]
        return node

    def describe(self, schema):
        """What a schema accepts, in words, for messages."""
        if "description" in schema and "$ref" not in schema:
            return schema["description"]
        if "$ref" in schema:   # what the referenced schema accepts, whatever the site says
            return self.describe(self.resolve(schema["$ref"]))
        if "const" in schema:
            return shown(schema["const"])
        if "enum" in schema:
            return "one of " + ", ".join(shown(item) for item in schema["enum"])
        names = schema.get("type", "any value")
        return " or ".join(names) if isinstance(names, list) else names

    # -- compiling -----------------------------------------------------------

    def _compile(self, schema):
        if schema is True:
            return _valid
        if schema is False:
            return lambda value: Problem("no value is allowed here")
        unknown = set(schema) - _KEYWORDS
        if unknown:
            raise ValueError(f"schema keywords {sorted(unknown)} are not supported by this validator")
        # A schema of one JSON type checks the type inside that type's own check (one call).
        names = schema.get("type", [])
        names = names if isinstance(names, list) else [names]
        single = names[0] if len(names) == 1 else None
        typed = {group: single in kinds for group, kinds in _GROUPS.items()}
        groups = [self._string(schema, typed["string"]), self._number(schema, typed["number"]),
                  self._array(schema, typed["array"]), self._object(schema, typed["object"])]
        merged = any(typed[group] and check is not None for group, check in zip(_GROUPS, groups))
        checks = [check for check in (
            None if merged else self._type(schema), self._enum(schema), self._ref(schema), *groups,
            self._all_of(schema), self._any_of(schema), self._if_then(schema)) if check is not None]
        if not checks:
            return _valid
        if len(checks) == 1:
            return checks[0]

        def check_all(value):
            for check in checks:
                problem = check(value)
                if problem is not None:
                    return problem
            return None
        return check_all

    def _expected(self, schema):
        """What a type check failing says is expected."""
        names = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        # A scalar's description says what it is (a hex string...); a record's is prose.
        if "description" in schema and not {"object", "array"} & set(names):
            return schema["description"]
        return " or ".join(_TYPE_WORDS[name] for name in names)

    def _type(self, schema):
        if "type" not in schema:
            return None
        names = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        allowed = frozenset(kind for name in names for kind in _TYPES[name])
        expected = self._expected(schema)

        def check_type(value):
            if type(value) not in allowed:
                return _type_problem(expected, value)
            return None
        return check_type

    def _enum(self, schema):
        if "const" not in schema and "enum" not in schema:
            return None
        members = [schema["const"]] if "const" in schema else schema["enum"]
        # JSON equality: true is not 1, and 1.0 is not accepted for an integer member.
        allowed = frozenset((type(member), member) for member in members)
        expected = self.describe(schema)

        def check_member(value):
            try:
                if (type(value), value) in allowed:
                    return None
            except TypeError:   # an array or object: never a member of these scalar lists
                pass
            return Problem(f"expected {expected}, got {shown(value)}")
        return check_member

    def _ref(self, schema):
        if "$ref" not in schema:
            return None
        return self.validator(schema["$ref"])

    def _string(self, schema, typed):
        pattern = re.compile(schema["pattern"]) if "pattern" in schema else None
        shortest, longest = schema.get("minLength", 0), schema.get("maxLength")
        if pattern is None and not shortest and longest is None:
            return None
        expected = self._expected(schema) if typed else None
        described = schema.get("description")
        search = pattern.search if pattern is not None else None

        def check_string(value):
            if type(value) is not str:
                return _type_problem(expected, value) if typed else None
            if longest is not None and len(value) > longest:
                return Problem(f"{len(value)} characters, at most {longest} allowed")
            if len(value) < shortest:
                return Problem(f"{len(value)} characters, at least {shortest} needed")
            if search is not None and search(value) is None:
                return Problem(f"expected {described}, got {shown(value)}" if described
                               else f"{shown(value)} does not match {pattern.pattern}")
            return None
        return check_string

    def _number(self, schema, typed):
        low, high = schema.get("minimum"), schema.get("maximum")
        if low is None and high is None:
            return None
        numbers = frozenset(kind for name in ([schema["type"]] if typed else ()) for kind in _TYPES[name]) \
            or frozenset((int, float))
        expected = self._expected(schema) if typed else None

        def check_number(value):
            if type(value) not in numbers:
                return _type_problem(expected, value) if typed else None
            if low is not None and value < low:
                return Problem(f"{shown(value)} is below the minimum {low}")
            if high is not None and value > high:
                return Problem(f"{shown(value)} is above the maximum {high}")
            return None
        return check_number

    def _array(self, schema, typed):
        if not any(key in schema for key in ("items", "prefixItems", "minItems", "maxItems")):
            return None
        prefix = [self._compile(item) for item in schema.get("prefixItems", ())]
        rest = self._compile(schema["items"]) if "items" in schema else None
        fewest, most = schema.get("minItems", 0), schema.get("maxItems")
        expected = self._expected(schema) if typed else None

        def check_array(value):
            if type(value) is not list:
                return _type_problem(expected, value) if typed else None
            if len(value) < fewest:
                return Problem(f"{len(value)} items, at least {fewest} needed")
            if most is not None and len(value) > most:
                return Problem(f"{len(value)} items, at most {most} allowed")
            for index, item in enumerate(value):
                check = prefix[index] if index < len(prefix) else rest
                if check is not None:
                    problem = check(item)
                    if problem is not None:
                        return problem.at(index)
            return None
        return check_array

    def _object(self, schema, typed):
        if not any(key in schema for key in ("properties", "required", "additionalProperties")):
            return None
        properties = {name: self._compile(item) for name, item in schema.get("properties", {}).items()}
        required = tuple(schema.get("required", ()))
        additional = schema.get("additionalProperties", True)
        extra = None if additional is True else False if additional is False else self._compile(additional)
        expected = self._expected(schema) if typed else None
        names = properties.keys()
        listed = tuple(properties.items())

        needed = frozenset(required)

        def check_object(value):
            if type(value) is not dict:
                return _type_problem(expected, value) if typed else None
            if not needed <= value.keys():
                return Problem(f'missing "{next(name for name in required if name not in value)}"')
            if extra is None:     # other fields are free: only the listed ones need a look
                for name, check in listed:
                    if name in value:
                        problem = check(value[name])
                        if problem is not None:
                            return problem.at(name)
                return None
            if extra is False and not value.keys() <= names:
                return Problem(f"unknown field {shown(min(value.keys() - names))}")
            for name, item in value.items():
                problem = properties.get(name, extra)(item)
                if problem is not None:
                    return problem.at(name)
            return None
        return check_object

    def _all_of(self, schema):
        if "allOf" not in schema:
            return None
        branches = schema["allOf"]
        dispatch = self._dispatch(branches)
        if dispatch is not None:
            return dispatch
        checks = [self._compile(branch) for branch in branches]

        def check_all_of(value):
            for check in checks:
                problem = check(value)
                if problem is not None:
                    return problem
            return None
        return check_all_of

    def _dispatch(self, branches):
        """allOf of if/then branches that each test one property for a string constant, the same
        property in all: compiled as a table lookup on that property (the same result as trying
        every branch's if)."""
        keys, table = set(), {}
        for branch in branches:
            condition = branch.get("if", {})
            tested = condition.get("properties", {})
            if set(branch) != {"if", "then"} or set(condition) != {"properties"} or len(tested) != 1:
                return None
            (key, test), = tested.items()
            if set(test) != {"const"} or type(test["const"]) is not str:
                return None
            keys.add(key)
            table[test["const"]] = self._compile(branch["then"])
        if len(keys) != 1:
            return None
        key = keys.pop()

        def check_dispatch(value):
            if type(value) is dict:
                selector = value.get(key)
                if type(selector) is str:
                    check = table.get(selector)
                    if check is not None:
                        return check(value)
            return None
        return check_dispatch

    def _any_of(self, schema):
        if "anyOf" not in schema:
            return None
        checks = [self._compile(branch) for branch in schema["anyOf"]]
        expected = " or ".join(self.describe(branch) for branch in schema["anyOf"])

        def check_any_of(value):
            for check in checks:
                if check(value) is None:
                    return None
            return Problem(f"expected {expected}, got {shown(value)}")
        return check_any_of

    def _if_then(self, schema):
        if "if" not in schema:
            return None
        condition = self._compile(schema["if"])
        then = self._compile(schema.get("then", True))
        return lambda value: then(value) if condition(value) is None else None
