"""Tables that fit the console: numbers are never cut.

A table declares its columns with what each is worth (``Col.keep``: 0 always shown,
higher numbers dropped first when the console is narrow; ``verbose`` ones only with
-v). ``fit_table`` keeps the columns whose full width fits, lets text columns (names,
messages) fold onto more lines, and says which columns it left out. When even the
essential columns do not fit, each row is printed as ``key: value`` lines instead.
Numbers are formatted to 3-4 significant digits by ``num`` before they get here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

TEXT_WIDTH = 16  # a text column (a model name) folds at this width before optional columns give way
MIN_TEXT = 10  # ... and at this width when only the essential columns are left


@dataclass(frozen=True)
class Col:
    header: str
    justify: str = "right"
    text: bool = False  # names and messages: may fold onto several lines (numbers never do)
    keep: int = 0  # 0: always; a column with a higher number is dropped before one with a lower
    verbose: bool = False  # only with -v (and in JSON)


def num(x: float | None, digits: int = 4) -> str:
    """A number in at most ``digits`` significant digits; tiny and huge ones in e-notation."""
    if x is None:
        return "-"
    if isinstance(x, float) and (math.isnan(x) or math.isinf(x)):
        return str(x)
    if x == 0:
        return "0"
    if abs(x) >= 1e6 or abs(x) < 1e-3:
        return f"{x:.{max(1, digits - 2)}e}"
    if abs(x) >= 10**digits:
        return f"{x:.0f}"  # 61530 items/s reads better than 6.153e+04 and is no wider
    return f"{x:.{digits}g}"


def cell_width(cell: str) -> int:
    """The widest line of a cell as printed (markup removed)."""
    from rich.text import Text

    return max((Text.from_markup(line).cell_len for line in str(cell).split("\n")), default=0)


def _needed(col: Col, cells: Sequence[str], text_width: int = TEXT_WIDTH) -> int:
    natural = max([cell_width(c) for c in cells] + [len(col.header)])
    return min(natural, max(text_width, len(col.header))) if col.text else natural


def _overhead(n: int) -> int:
    return 3 * n - 3  # box.SIMPLE_HEAD without edges: one space of padding each side, one rule between


def choose_columns(width: int, cols: Sequence[Col], rows: Sequence[Sequence[str]], verbose: bool,
                   text_width: int = TEXT_WIDTH) -> tuple[list[int], list[str]]:
    """Indices of the columns to show at ``width`` (dropping the highest ``keep`` first),
    and the headers left out. An empty list: not even the essential ones fit."""
    empty = {i for i in range(1, len(cols)) if all(r[i] in ("-", "") for r in rows)}  # nothing to say: left out
    shown = [i for i, c in enumerate(cols) if (verbose or not c.verbose) and i not in empty]
    dropped = [c.header for i, c in enumerate(cols) if c.verbose and not verbose and i not in empty]
    need = {i: _needed(cols[i], [r[i] for r in rows], text_width) for i in shown}
    while shown and sum(need[i] for i in shown) + _overhead(len(shown)) > width:
        optional = [i for i in shown if cols[i].keep > 0]
        if not optional:
            return [], [c.header for c in cols]
        worst = max(optional, key=lambda i: (cols[i].keep, i))
        shown.remove(worst)
        dropped.append(cols[worst].header)
    return shown, dropped


def fit_table(console, title: str | None, cols: Sequence[Col], rows: Sequence[Sequence[Any]], *,
              verbose: bool = False, note_dropped: bool = True) -> None:
    """Print ``rows`` under ``cols`` within the console's width (see the module docstring)."""
    from rich import box
    from rich.table import Table

    rows = [[str(c) for c in r] for r in rows]
    if title:
        console.print(title, overflow="fold", highlight=False)
    if not rows:
        return
    text_width = TEXT_WIDTH
    shown, dropped = choose_columns(console.width, cols, rows, verbose, text_width)
    if not shown:  # names fold narrower before the table gives way to key: value lines
        text_width = MIN_TEXT
        shown, dropped = choose_columns(console.width, cols, rows, verbose, text_width)
    if not shown:
        return _vertical(console, cols, rows)
    t = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, highlight=False)
    for i in shown:
        c = cols[i]
        if c.text:
            t.add_column(c.header, justify=c.justify, overflow="fold",
                         min_width=_needed(c, [r[i] for r in rows], text_width))
        else:
            t.add_column(c.header, justify=c.justify, no_wrap=True, min_width=_needed(c, [r[i] for r in rows]))
    for r in rows:
        t.add_row(*(r[i] for i in shown))
    console.print(t)
    if dropped and note_dropped and not verbose:
        console.print(f"[dim](also in -v and --json: {', '.join(dropped)})[/]", overflow="fold", highlight=False)


def _vertical(console, cols: Sequence[Col], rows: Sequence[Sequence[str]]) -> None:
    """One block per row: its first cell, then ``header: value`` lines."""
    for r in rows:
        console.print(f"[bold]{r[0]}[/]", overflow="fold", highlight=False)
        for c, v in zip(cols[1:], r[1:]):
            console.print(f"  {c.header}: {v}", overflow="fold", highlight=False)


def key_values(console, pairs: Sequence[tuple[str, str]], title: str | None = None) -> None:
    """``key  value`` lines, values folding under themselves (inspect's header, doctor)."""
    from rich.table import Table

    if title:
        console.print(title, overflow="fold", highlight=False)
    t = Table(show_header=False, box=None, pad_edge=False, highlight=False)
    t.add_column(style="bold", overflow="fold")
    t.add_column(overflow="fold")
    for k, v in pairs:
        t.add_row(k, v)
    console.print(t)
