"""``--where`` filters: simple comparisons on metadata and derived columns, parsed (never evaluated as code).

Grammar::

    expr       := term ("or" term)*
    term       := factor ("and" factor)*
    factor     := "not" factor | "(" expr ")" | comparison
    comparison := COLUMN OP VALUE         OP: == = != < <= > >=
    VALUE      := number | 'text' | "text" | true | false | null

Example:
    >>> f = parse_where("z_pred < 0.1 and type == 'galaxy'")
    >>> f.columns
    ['type', 'z_pred']
    >>> import pandas as pd
    >>> f.mask(pd.DataFrame({"z_pred": [0.05, 0.3], "type": ["galaxy", "galaxy"]})).tolist()
    [True, False]
"""

from __future__ import annotations

import operator
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .errors import InputError

_TOKEN = re.compile(r"""\s*(?:
    (?P<num>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)(?![A-Za-z_])
  | (?P<str>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")
  | (?P<op>==|!=|<=|>=|<|>|=)
  | (?P<paren>[()])
  | (?P<word>[A-Za-z_][A-Za-z0-9_.]*)
)""", re.VERBOSE)

_OPS = {"==": operator.eq, "=": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le,
        ">": operator.gt, ">=": operator.ge}
_KEYWORDS = {"and", "or", "not", "true", "false", "null"}


@dataclass
class Where:
    """A parsed filter; :meth:`mask` evaluates it on a table."""

    text: str
    tree: tuple

    @property
    def columns(self) -> list[str]:
        out: set[str] = set()

        def walk(node):
            if node[0] == "cmp":
                out.add(node[1])
            else:
                for child in node[1:]:
                    walk(child)
        walk(self.tree)
        return sorted(out)

    def mask(self, table: pd.DataFrame) -> np.ndarray:
        """Boolean array, one value per row of ``table``.

        Raises:
            InputError: a column the table lacks, or a comparison of text with a number.
        """
        missing = [c for c in self.columns if c not in table.columns]
        if missing:
            raise InputError(f"where {self.text!r}: no column {missing[0]!r} "
                             f"(columns: {', '.join(map(str, table.columns))})")
        mask = np.asarray(self._eval(self.tree, table), dtype=bool)
        if not mask.any():
            self._check_values(self.tree, table)
        return mask

    def _check_values(self, node, table) -> None:
        """An empty answer because a text value is in no row (a typo, most often): say so, with the values."""
        if node[0] != "cmp":
            for child in node[1:]:
                self._check_values(child, table)
            return
        _, column, op, value = node
        if op in ("==", "=") and isinstance(value, str):
            values = sorted(set(table[column].dropna().astype(str)))
            if value not in values:
                shown = ", ".join(values[:12]) + (f" ... ({len(values)} values)" if len(values) > 12 else "")
                raise InputError(f"where {self.text!r}: no object has {column} {value!r} "
                                 f"(its values: {shown or 'none'})")

    def _eval(self, node, table):
        kind = node[0]
        if kind == "and":
            return self._eval(node[1], table) & self._eval(node[2], table)
        if kind == "or":
            return self._eval(node[1], table) | self._eval(node[2], table)
        if kind == "not":
            return ~self._eval(node[1], table)
        _, column, op, value = node
        col = table[column]
        if value is None:
            isnull = col.isna().to_numpy()
            return isnull if op in ("==", "=") else ~isnull
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            numeric = pd.to_numeric(col, errors="coerce")
            if numeric.isna().all() and col.notna().any():
                raise InputError(f"where {self.text!r}: column {column!r} is not numeric")
            result = _OPS[op](numeric, value).to_numpy()
            return np.where(numeric.isna().to_numpy(), op == "!=", result)
        if isinstance(value, bool):
            return _OPS[op](col.astype("boolean"), value).fillna(False).to_numpy(dtype=bool)
        if pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col):
            raise InputError(f"where {self.text!r}: column {column!r} holds numbers, compared with the text "
                             f"{value!r} (write the number without quotes)")
        if op not in ("==", "=", "!="):
            return _OPS[op](col.astype(str), value).to_numpy()
        return _OPS[op](col.astype(str), value).to_numpy()


def _tokens(text: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise InputError(f"where {text!r}: cannot read {text[pos:].strip()[:20]!r}")
        kind = m.lastgroup
        out.append((kind, m.group(kind)))
        pos = m.end()
    return out


def parse_where(text: str) -> Where:
    """Parse a ``--where`` expression.

    Raises:
        InputError: one line naming the expression and what is wrong with it.
    """
    if not isinstance(text, str):
        raise InputError(f"where: a filter is text, such as \"r_mag < 20 and label == 'agn'\" (not {type(text).__name__})")
    if not text.strip():
        raise InputError("where: empty expression")
    toks = _tokens(text)
    pos = 0

    def peek():
        return toks[pos] if pos < len(toks) else (None, None)

    def take():
        nonlocal pos
        tok = peek()
        pos += 1
        return tok

    def expr():
        node = term()
        while peek() == ("word", "or") or peek()[1] and peek()[0] == "word" and peek()[1].lower() == "or":
            take()
            node = ("or", node, term())
        return node

    def term():
        node = factor()
        while peek()[0] == "word" and peek()[1].lower() == "and":
            take()
            node = ("and", node, factor())
        return node

    def factor():
        kind, val = peek()
        if kind == "word" and val.lower() == "not":
            take()
            return ("not", factor())
        if (kind, val) == ("paren", "("):
            take()
            node = expr()
            if take() != ("paren", ")"):
                raise InputError(f"where {text!r}: missing ')'")
            return node
        return comparison()

    def comparison():
        kind, column = take()
        if kind != "word" or column.lower() in _KEYWORDS:
            raise InputError(f"where {text!r}: expected a column name, got {column!r}")
        kind, op = take()
        if kind != "op":
            raise InputError(f"where {text!r}: expected a comparison (== != < <= > >=) after {column!r}")
        kind, raw = take()
        if kind == "num":
            value = float(raw) if any(c in raw for c in ".eE") else int(raw)
        elif kind == "str":
            value = raw[1:-1].encode().decode("unicode_escape")
        elif kind == "word" and raw.lower() in ("true", "false"):
            value = raw.lower() == "true"
        elif kind == "word" and raw.lower() == "null":
            value = None
            if op not in ("==", "=", "!="):
                raise InputError(f"where {text!r}: null can only be compared with == or !=")
        else:
            raise InputError(f"where {text!r}: expected a value after {column} {op}, got "
                             + (repr(raw) if raw is not None else "nothing"))
        return ("cmp", column, op, value)

    tree = expr()
    if pos != len(toks):
        raise InputError(f"where {text!r}: unexpected {toks[pos][1]!r}")
    return Where(text, tree)
