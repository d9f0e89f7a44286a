"""Recognise a data file and stage it in the warehouse engine, row numbers kept.

`detect_format` looks at the first bytes only (never the whole file): gzip and Parquet
by their magic numbers, JSON lines by a leading `{`, and for delimited text the
delimiter, the header line and a UTF-8 byte-order mark. `stage` then hands the file to
DuckDB's own readers so that large files stream and never pass through pandas.

Choices where the issue is silent:

* Every CSV value is staged as text (`all_varchar`): parsing happens afterwards, so a
  bad value becomes a rejected row with its reason instead of a failed read or a value
  silently turned into NULL by the engine's type sniffer.
* Whitespace-separated files (runs of spaces or tabs, leading blanks, as in CDNOW's
  `CDNOW_master.txt`) are read one line per value and split on `\\s+` in the engine.
* A first line counts as a header when none of its fields looks like a number or a date
  while the lines below do, or when its fields are names that never recur below. Files
  without a header get positional columns `column0`, `column1`, … (DuckDB's naming).
* The 1-based row number of a staged row counts data rows, not lines: the header is
  not row 1. DuckDB keeps insertion order when it builds a table (its default
  `preserve_insertion_order`), so the table's `rowid` follows the file.
* Numbers are read with a decimal point unless the caller says `decimal=","` (German
  and most continental exports: `1.234,50`). `number_sql` turns text into a number
  for either; `detect_decimal` finds the comma only where it cannot be misread: a
  `;`-delimited file whose number columns hold German-written values only, at least
  one of them with a decimal comma. A file of whole numbers such as `1.500` alone
  stays ambiguous (1.5 or 1500) and is read with a decimal point.
"""

from __future__ import annotations

import csv
import gzip
import io
import logging
import re
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from clm.errors import ImportFormatError
from clm.progress import SILENT, Progress
from clm.warehouse.engine import Warehouse

log = logging.getLogger("clm.collect")

Kind = Literal["csv", "parquet", "jsonl"]
WHITESPACE = "whitespace"
DELIMITERS = (",", ";", "\t", "|")
SAMPLE_BYTES = 256 * 1024
SAMPLE_LINES = 200
# A separator that never occurs in text files: reading with it yields whole lines.
LINE_SEPARATOR = "\x01"

_NUMBER = re.compile(r"^[+-]?(\d+([.,]\d*)?|[.,]\d+)([eE][+-]?\d+)?$")
_DATE = re.compile(r"^\d{1,4}[-/.]\d{1,2}[-/.]\d{1,4}([ T].*)?$")
_NAME = re.compile(r"^[A-Za-z_\"'][\w .\"'()#/-]*$")
# A number written with a decimal comma, optionally with `.` grouping thousands:
# 12,50 · -1.234,5 · 1.234 · 7. Used both to detect and to parse such numbers.
DECIMAL_COMMA = r"^[+-]?(\d{1,3}(\.\d{3})+|\d+)(,\d+)?$"
DECIMALS = (".", ",")


@dataclass(frozen=True)
class FileFormat:
    """What a file is and how to read it."""

    kind: Kind
    compression: str | None = None  # "gzip" or None
    delimiter: str | None = None  # one character, or "whitespace"; CSV only
    header: bool = True
    bom: bool = False
    columns: tuple[str, ...] = ()  # the names the staged table will have

    @property
    def label(self) -> str:
        name: str = "csv.gz" if self.kind == "csv" and self.compression else self.kind
        if self.kind == "jsonl" and self.compression:
            name = "jsonl.gz"
        return name


def _head(path: Path) -> tuple[bytes, str | None]:
    """The first bytes of the file, uncompressed, and the compression found."""
    with path.open("rb") as fh:
        magic = fh.read(4)
    if magic[:2] == b"\x1f\x8b":
        with gzip.open(path, "rb") as gz:
            return gz.read(SAMPLE_BYTES), "gzip"
    with path.open("rb") as fh:
        return fh.read(SAMPLE_BYTES), None


def detect_format(path: str | Path) -> FileFormat:
    """Recognise `path` as CSV (any delimiter), Parquet or JSON lines."""
    path = Path(path)
    if not path.is_file():
        raise ImportFormatError(
            f"file {str(path)!r} does not exist or is not a file; "
            "check the path (relative paths start at the current directory)"
        )
    head, compression = _head(path)
    if head[:4] == b"PAR1":
        return FileFormat("parquet", columns=_parquet_columns(path))
    bom = head.startswith(b"\xef\xbb\xbf")
    text = head[3:] if bom else head
    try:
        decoded = text.decode("utf-8")
    except UnicodeDecodeError as exc:
        # A cut in the middle of a multi-byte character at the sample's end is fine.
        if exc.start < len(text) - 4:
            raise ImportFormatError(
                f"file {str(path)!r} is not UTF-8 text (bad byte at offset "
                f"{exc.start}); save it as UTF-8, CSV, Parquet or JSON lines"
            ) from None
        decoded = text[: exc.start].decode("utf-8")
    lines = [ln for ln in decoded.splitlines() if ln.strip()]
    if len(head) == SAMPLE_BYTES and len(lines) > 1:
        lines = lines[:-1]  # the last line of a sample may be cut off
    lines = lines[:SAMPLE_LINES]
    if not lines:
        raise ImportFormatError(f"file {str(path)!r} is empty; nothing to import")
    if lines[0].lstrip().startswith("{"):
        return FileFormat("jsonl", compression=compression, bom=bom)
    delimiter, rows = _sniff_delimiter(lines)
    header = _has_header(rows)
    width = max(len(r) for r in rows)
    if header:
        columns = tuple(c.strip() for c in rows[0])
    else:
        columns = tuple(f"column{i}" for i in range(width))
    return FileFormat("csv", compression, delimiter, header, bom, columns)


def _split(lines: list[str], delimiter: str) -> list[list[str]]:
    if delimiter == WHITESPACE:
        return [ln.split() for ln in lines]
    return list(csv.reader(io.StringIO("\n".join(lines)), delimiter=delimiter))


def _sniff_delimiter(lines: list[str]) -> tuple[str, list[list[str]]]:
    """The delimiter that splits every sampled line into the same number (> 1) of
    fields; the most fields wins. Runs of blanks are the fallback."""
    best: tuple[int, str, list[list[str]]] | None = None
    for delim in DELIMITERS:
        rows = _split(lines, delim)
        widths = {len(r) for r in rows}
        if (
            len(widths) == 1
            and (n := widths.pop()) > 1
            and (best is None or n > best[0])
        ):
            best = (n, delim, rows)
    if best:
        return best[1], best[2]
    rows = _split(lines, WHITESPACE)
    if len({len(r) for r in rows}) == 1 and len(rows[0]) > 1:
        return WHITESPACE, rows
    return ",", _split(lines, ",")


def _looks_like_value(text: str) -> bool:
    text = text.strip()
    return bool(_NUMBER.match(text) or _DATE.match(text))


def _has_header(rows: list[list[str]]) -> bool:
    first, rest = rows[0], rows[1:]
    if any(not f.strip() or _looks_like_value(f) for f in first):
        return False
    if not rest:
        return all(_NAME.match(f.strip()) for f in first)
    for i in range(len(first)):
        col = [r[i] for r in rest if i < len(r) and r[i].strip()]
        if col and sum(map(_looks_like_value, col)) * 2 >= len(col):
            return True  # a name above numbers or dates
    # All columns are text: a header's names are words that do not recur below.
    return all(_NAME.match(f.strip()) for f in first) and not any(
        first[i] in {r[i] for r in rest if i < len(r)} for i in range(len(first))
    )


def _parquet_columns(path: Path) -> tuple[str, ...]:
    import pyarrow.parquet as pq

    return tuple(pq.read_schema(path).names)


def sql_str(value: str) -> str:
    """A SQL string literal."""
    return "'" + value.replace("'", "''") + "'"


def ident(name: str) -> str:
    """A quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def reader_sql(path: str | Path, fmt: FileFormat) -> str:
    """The DuckDB table function that reads `path` as `fmt` (typed for Parquet,
    text for CSV)."""
    p = sql_str(str(path))
    if fmt.kind == "parquet":
        return f"read_parquet({p})"
    # Gzip is found by its magic bytes, whatever the file is called.
    p += f", compression={sql_str(fmt.compression or 'none')}"
    if fmt.kind == "jsonl" or fmt.delimiter == WHITESPACE:
        return (
            f"read_csv({p}, columns={{'line': 'VARCHAR'}}, "
            f"delim={sql_str(LINE_SEPARATOR)}, quote='', escape='', header=false, "
            "strict_mode=false, "
            "max_line_size=16777216)"
        )
    return (
        f"read_csv({p}, all_varchar=true, header={str(fmt.header).lower()}, "
        f"delim={sql_str(fmt.delimiter or ',')}, max_line_size=16777216)"
    )


def stage(wh: Warehouse, path: str | Path, fmt: FileFormat) -> str:
    """Copy the file into a temporary table: its columns plus `_row`, the 1-based data
    row number. For JSON lines the one column is `line`, the raw text."""
    name = f"_clm_stage_{uuid.uuid4().hex[:8]}"
    src = reader_sql(path, fmt)
    if fmt.kind == "csv" and fmt.delimiter == WHITESPACE:
        # Split each line on runs of blanks; a header line is dropped, not staged.
        parts = "string_split_regex(trim(line, ' ' || chr(9) || chr(13)), '\\s+')"
        cols = ", ".join(
            f"nullif(_f[{i + 1}], '') AS {ident(c)}" for i, c in enumerate(fmt.columns)
        )
        lines = f"SELECT {parts} AS _f FROM {src} WHERE trim(line) <> ''"
        body = f"SELECT {cols} FROM ({lines})"
        if fmt.header:
            body += " OFFSET 1"
    elif fmt.kind == "jsonl":
        body = f"SELECT line FROM {src} WHERE trim(line) <> ''"
    else:
        body = f"SELECT * FROM {src}"
    try:
        wh.con.raw_sql(f"CREATE TEMP TABLE {name} AS {body}")
        wh.con.raw_sql(f"ALTER TABLE {name} ADD COLUMN _row BIGINT")
        wh.con.raw_sql(f"UPDATE {name} SET _row = rowid + 1")
    except Exception as exc:
        raise ImportFormatError(
            f"cannot read {str(path)!r} as {fmt.label}"
            + (f" with delimiter {fmt.delimiter!r}" if fmt.delimiter else "")
            + f": {exc}; check the file, or give the delimiter explicitly"
        ) from exc
    return name


def with_delimiter(fmt: FileFormat, path: str | Path, delimiter: str) -> FileFormat:
    """`fmt` re-read with a delimiter the user gave (`\\t`, `tab`, `whitespace`, …)."""
    aliases = {"tab": "\t", "\\t": "\t", "space": WHITESPACE, "whitespace": WHITESPACE}
    delim = aliases.get(delimiter.lower(), delimiter)
    if delim != WHITESPACE and len(delim) != 1:
        raise ImportFormatError(
            f"delimiter {delimiter!r}: expected one character, `tab` or `whitespace`"
        )
    head, _ = _head(Path(path))
    text = head.decode("utf-8", errors="replace").lstrip("\ufeff")
    lines = [ln for ln in text.splitlines() if ln.strip()][:SAMPLE_LINES]
    if len(head) == SAMPLE_BYTES and len(lines) > 1:
        lines = lines[:-1]
    rows = _split(lines, delim)
    header = _has_header(rows)
    width = max(len(r) for r in rows)
    columns = (
        tuple(c.strip() for c in rows[0])
        if header
        else tuple(f"column{i}" for i in range(width))
    )
    return FileFormat("csv", fmt.compression, delim, header, fmt.bom, columns)


def check_decimal(decimal: str) -> str:
    """The decimal mark the user gave, checked: `.` or `,`."""
    aliases = {"comma": ",", "point": ".", "dot": "."}
    mark = aliases.get(decimal.strip().lower(), decimal.strip())
    if mark not in DECIMALS:
        raise ImportFormatError(
            f"decimal {decimal!r}: expected `.` (12.50) or `,` (12,50 or 1.234,50)"
        )
    return mark


def number_sql(text: str, decimal: str = ".") -> str:
    """SQL turning the text expression `text` into a DOUBLE, NULL when it is not a
    number written with `decimal` as the decimal mark. With `,`, a `.` groups
    thousands and is dropped; a value such as `12.50` is not a number then (it
    would be read as 1250), so it is refused rather than guessed."""
    if decimal == ".":
        return f"TRY_CAST({text} AS DOUBLE)"
    plain = f"replace(replace(trim({text}), '.', ''), ',', '.')"
    return (
        f"CASE WHEN regexp_full_match(trim({text}), {sql_str(DECIMAL_COMMA)}) "
        f"THEN TRY_CAST({plain} AS DOUBLE) END"
    )


def detect_decimal(
    wh: Warehouse,
    table: str,
    columns: list[str] | tuple[str, ...],
    delimiter: str | None,
) -> str:
    """`,` when a `;`-delimited file's `columns` (staged as text) hold only numbers
    written with a decimal comma and at least one value has a comma; else `.`.

    The whole columns are read (one scan in the engine), not a sample, so that a
    single `12.50` further down keeps the file on the decimal point. Values that are
    numbers in neither notation (`abc`, `n/a`) do not vote: they are rejected
    either way, and one of them must not cost the file its decimal comma."""
    if delimiter != ";" or not columns:
        return "."
    other, commas = [], []
    for c in columns:
        v = f"nullif(trim(CAST({ident(c)} AS VARCHAR)), '')"
        comma = f"regexp_full_match({v}, {sql_str(DECIMAL_COMMA)})"
        other.append(
            f"count(*) FILTER (WHERE NOT {comma} AND TRY_CAST({v} AS DOUBLE) "
            "IS NOT NULL)"
        )
        commas.append(f"count(*) FILTER (WHERE contains({v}, ','))")
    found = scalar(
        wh,
        f"SELECT {' + '.join(other)} AS other, {' + '.join(commas)} AS commas "
        f"FROM {table}",
    )
    return "," if found["other"] == 0 and found["commas"] > 0 else "."


def execute(
    wh: Warehouse, sql: str, progress: Progress = SILENT, label: str | None = None
) -> None:
    """Run one statement; while it runs, a helper thread polls DuckDB's
    `query_progress()` (percent done) and forwards it to `progress`."""
    raw = getattr(wh.con, "con", None)
    if label:
        progress.start(label, 100)
    if progress is SILENT or raw is None or not hasattr(raw, "query_progress"):
        wh.con.raw_sql(sql)
        if label:
            progress.done()
        return
    stop = threading.Event()

    def poll() -> None:
        reported = 0.0
        while not stop.wait(0.2):
            try:
                done = float(raw.query_progress())
            except Exception:  # the query ended between two polls
                return
            if done > reported:
                progress.advance(done - reported)
                reported = done

    wh.con.raw_sql("SET enable_progress_bar = true")
    wh.con.raw_sql("SET enable_progress_bar_print = false")
    helper = threading.Thread(target=poll, daemon=True)
    helper.start()
    try:
        wh.con.raw_sql(sql)
    finally:
        stop.set()
        helper.join()
        if label:
            progress.done()


def scalar(wh: Warehouse, sql: str) -> Any:
    """The single value a query returns."""
    return wh.con.sql(sql).to_pyarrow().to_pylist()[0]


def rows(wh: Warehouse, sql: str) -> list[dict[str, Any]]:
    return wh.con.sql(sql).to_pyarrow().to_pylist()  # type: ignore[no-any-return]
