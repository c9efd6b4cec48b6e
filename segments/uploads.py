"""Uploaded lists in the warehouse (issue 14): ``segments upload`` and the lists that
specs keep in a committed ``file:``.

Every list lives in one table of the target schema, a dbt source the compiled SQL
joins (:data:`~segments.compiler.models.UPLOADS_TABLE`): ``segment_name, match_on,
upload_key``, keys normalized (:mod:`segments.keys`) and distinct per segment. Each
change also appends a row to ``segment_upload_history``: who, when, how, and counts;
never a key.

A change is computed into a temporary relation of the session (the other segments'
rows and this segment's new ones), then the table and the history are replaced in one
:meth:`~segments.engines.base.Session.apply`: one transaction on DuckDB and
PostgreSQL, Spark's write-beside-then-swap elsewhere. Keys are read in Python, row by
row, and staged in DuckDB in batches, so memory stays flat as files grow; rows are
named by line (CSV) or row (Parquet) number, never by their content.
"""

from __future__ import annotations

import csv
import datetime as dt
import getpass
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
from sqlglot import exp

from segments import keys
from segments.compiler import models as md
from segments.engines.base import EngineError, ReplaceTable, Session, drop
from segments.errors import SegmentsError
from segments.spec import model as m

HISTORY = "segment_upload_history"
MODES = ("replace", "append", "remove")
SHOWN = 10  # line numbers named per problem
_BATCH = 100_000

_LIST_COLUMNS = {"segment_name": "VARCHAR", "match_on": "VARCHAR", "upload_key": "VARCHAR"}
_HISTORY_COLUMNS = {
    "segment_name": "VARCHAR", "match_on": "VARCHAR", "mode": "VARCHAR", "source": "VARCHAR",
    "uploaded_by": "VARCHAR", "uploaded_at": "TIMESTAMP", "rows_read": "BIGINT", "invalid_keys": "BIGINT",
    "duplicate_keys": "BIGINT", "keys_before": "BIGINT", "keys_after": "BIGINT",
}


@dataclass
class KeysRead:
    """What a file held: its rows, the invalid ones (by line), its distinct keys."""

    rows: int = 0
    invalid: list[int] = field(default_factory=list)  # line (CSV) or row (Parquet) numbers
    invalid_count: int = 0
    valid: int = 0
    distinct: int = 0

    @property
    def duplicates(self) -> int:
        return self.valid - self.distinct


@dataclass(frozen=True)
class Report:
    """What ``segments upload`` prints."""

    segment: str
    mode: str
    read: KeysRead
    line_word: str  # "line" (CSV) or "row" (Parquet)
    before: int
    after: int
    matched_users: int | None  # None: no users table to match against
    unmatched_keys: int | None

    def lines(self) -> list[str]:
        r = self.read
        out = [
            f"{self.segment}: {self.mode} from {r.rows} rows read",
            f"  invalid keys: {r.invalid_count}" + (f" ({self.line_word}s {_listed(r.invalid, r.invalid_count)})" if r.invalid_count else ""),
            f"  duplicates: {r.duplicates}",
            f"  list: {self.before} keys before, {self.after} after",
        ]
        if self.matched_users is None:
            out.append("  matched users: unknown (no users table yet: `segments load`)")
        else:
            out.append(f"  matched users: {self.matched_users}, unmatched keys: {self.unmatched_keys}")
        return out


def _listed(numbers: list[int], total: int) -> str:
    shown = ", ".join(str(n) for n in numbers[:SHOWN])
    return shown + (f" and {total - SHOWN} more" if total > SHOWN else "")


# ---- reading a file -------------------------------------------------------------------


def _csv_cells(path: Path, column: str) -> Iterator[tuple[int, str]]:
    """(line number, cell of ``column``) of every data row; a row whose field count
    differs from the header's fails the whole file."""
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            reader = csv.reader(handle)
            header = next((row for row in reader if row), None)
            if header is None:
                raise SegmentsError(f"{path.name}: the file is empty: it needs a header row naming '{column}'")
            names = [cell.strip() for cell in header]
            if column not in names:
                raise SegmentsError(f"{path.name}: no column '{column}' in the header row ({len(names)} columns)")
            index, width, bad = names.index(column), len(names), []
            for row in reader:
                if not row:
                    continue  # a blank line
                if len(row) != width:
                    bad.append(reader.line_num)
                    continue
                if not bad:
                    yield reader.line_num, row[index]
    except UnicodeDecodeError:
        raise SegmentsError(f"{path.name}: not UTF-8 text; nothing was loaded") from None
    except csv.Error:
        # csv's messages may quote the offending text: say what, not the content
        raise SegmentsError(f"{path.name}: not valid CSV (a NUL byte or a field over the size limit); nothing was loaded") from None
    except OSError as error:
        raise SegmentsError(f"{path.name}: cannot read it ({error.strerror or type(error).__name__})") from None
    if bad:
        raise SegmentsError(
            f"{path.name}: {len(bad)} row(s) with another number of fields than the header's {width}, "
            f"on lines {_listed(bad, len(bad))}; nothing was loaded"
        )


def _parquet_cells(path: Path, column: str) -> Iterator[tuple[int, str]]:
    con = duckdb.connect(":memory:")
    try:
        reader = exp.Anonymous(this="read_parquet", expressions=[exp.Literal.string(str(path))])
        try:
            names = [row[0] for row in con.execute(exp.Describe(this=exp.select("*").from_(reader)).sql("duckdb")).fetchall()]
        except duckdb.Error:
            raise SegmentsError(f"{path.name}: not a Parquet file this can read; nothing was loaded") from None
        if column not in names:
            raise SegmentsError(f"{path.name}: no column '{column}' ({len(names)} columns)")
        cursor = con.execute(exp.select(exp.cast(exp.column(column, quoted=True), "VARCHAR")).from_(reader.copy()).sql("duckdb"))
        number = 0
        while batch := cursor.fetchmany(_BATCH):
            for (cell,) in batch:
                number += 1
                yield number, cell or ""
    finally:
        con.close()


def read_keys(duck: duckdb.DuckDBPyConnection, table: str, path: Path, match_on: str, country: str | None) -> KeysRead:
    """Normalize the ``match_on`` column of a CSV or Parquet file into the table
    ``table`` (``upload_key``, distinct) of the staging connection ``duck``.

    Raises:
        SegmentsError: no such file, not CSV/Parquet, no such column, or a row with
            another number of fields than the header (nothing is staged then).
    """
    if not path.is_file():
        raise SegmentsError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        cells = _parquet_cells(path, match_on)
    elif suffix in (".csv", ".txt"):
        cells = _csv_cells(path, match_on)
    else:
        raise SegmentsError(f"{path.name}: expected a .csv or .parquet file")
    raw = f"{table}_raw"
    temporary = exp.Properties(expressions=[exp.TemporaryProperty()])
    columns = exp.Schema(this=exp.to_table(raw), expressions=[exp.ColumnDef(this=exp.to_identifier("upload_key"), kind=exp.DataType.build("VARCHAR"))])
    duck.execute(exp.Create(kind="TABLE", replace=True, this=columns, properties=temporary).sql("duckdb"))
    read = KeysRead()
    batch: list[str] = []

    # the batch is bound as one list parameter: no pandas (a third of a second to import)
    as_list = exp.cast(exp.Placeholder(), exp.DataType.build("VARCHAR[]", dialect="duckdb"))
    insert = exp.insert(exp.select(exp.alias_(exp.Unnest(expressions=[as_list]), "upload_key")), raw).sql("duckdb")

    def flush() -> None:
        duck.execute(insert, [batch])
        batch.clear()

    for number, cell in cells:
        read.rows += 1
        key = keys.normalize(match_on, cell, country)
        if key is None:
            read.invalid_count += 1
            if len(read.invalid) < SHOWN:
                read.invalid.append(number)
            continue
        batch.append(key)
        if len(batch) >= _BATCH:
            flush()
    if batch:
        flush()
    distinct = exp.select("upload_key").distinct().from_(raw)
    duck.execute(exp.Create(kind="TABLE", replace=True, this=exp.to_table(table), expression=distinct, properties=temporary.copy()).sql("duckdb"))
    read.valid = duck.execute(exp.select(exp.Count(this=exp.Star())).from_(raw).sql("duckdb")).fetchone()[0]
    read.distinct = duck.execute(exp.select(exp.Count(this=exp.Star())).from_(table).sql("duckdb")).fetchone()[0]
    duck.execute(drop("TABLE", exp.to_table(raw)).sql("duckdb"))
    return read


# ---- the warehouse's lists -------------------------------------------------------------


def _empty(columns: dict[str, str]) -> exp.Select:
    nulls = [exp.alias_(exp.cast(exp.null(), kind), name) for name, kind in columns.items()]
    return exp.select(*nulls).where(exp.false())


def _is(column: str, value: str) -> exp.Expression:
    return exp.column(column).eq(exp.Literal.string(value))


def _lists(session: Session) -> exp.Table | None:
    """The warehouse's table of lists, None before the first upload."""
    table = session.engine.table(md.UPLOADS_TABLE)
    return table if session.columns(table.db, table.name) else None


def _rows_of(segment: str, match_on: str, keys_of: exp.Query) -> exp.Select:
    return exp.select(
        exp.alias_(exp.Literal.string(segment), "segment_name"), exp.alias_(exp.Literal.string(match_on), "match_on"), "upload_key"
    ).from_(exp.Subquery(this=keys_of, alias=exp.TableAlias(this=exp.to_identifier("k"))))


def _union(parts: Sequence[exp.Query], columns: dict[str, str]) -> exp.Query:
    if not parts:
        return _empty(columns)
    query = parts[0]
    for part in parts[1:]:
        query = exp.union(query, part, distinct=False)
    return query


def _count(session: Session, table: exp.Table, where: exp.Expression | None = None) -> int:
    query = exp.select(exp.Count(this=exp.Star())).from_(table.copy())
    if where is not None:
        query = query.where(where)
    return int(session.rows(query)[0][0])


def _list_rows(session: Session, replaced: dict[str, tuple[str, exp.Query]]) -> exp.Query:
    """Every list after replacing those of ``replaced`` (segment -> (match_on, its keys))."""
    current = _lists(session)
    parts: list[exp.Query] = []
    if current is not None:
        kept = exp.select(*_LIST_COLUMNS).from_(current)
        if replaced:
            kept = kept.where(exp.not_(exp.column("segment_name").isin(*(exp.Literal.string(s) for s in replaced))))
        parts.append(kept)
    parts += [_rows_of(segment, match_on, keys_of) for segment, (match_on, keys_of) in sorted(replaced.items())]
    return _union(parts, _LIST_COLUMNS)


def _history_row(segment: str, match_on: str, mode: str, source: str, read: KeysRead, before: int, after: int) -> exp.Select:
    try:
        who = getpass.getuser()
    except (KeyError, OSError):
        who = "unknown"
    at = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None).isoformat(sep=" ")
    values = [segment, match_on, mode, source, who, at, read.rows, read.invalid_count, read.duplicates, before, after]
    return exp.select(*[
        exp.alias_(exp.cast(exp.Literal.number(v) if isinstance(v, int) else exp.Literal.string(v), kind), name)
        for v, (name, kind) in zip(values, _HISTORY_COLUMNS.items())
    ])


def _history(session: Session, rows: list[exp.Select]) -> exp.Query:
    table = session.engine.table(HISTORY)
    parts: list[exp.Query] = [exp.select(*_HISTORY_COLUMNS).from_(table)] if session.columns(table.db, table.name) else []
    return _union(parts + rows, _HISTORY_COLUMNS)


def _temporary(session: Session, name: str, query: exp.Query) -> exp.Table:
    """The rows of ``query`` now, in a temporary table of the session, to read in a
    later :meth:`~segments.engines.base.Session.apply`."""
    session.create_temporary(name, query)
    return exp.to_table(name)


def _write(session: Session, lists: exp.Query, history_rows: list[exp.Select]) -> None:
    """Replace the lists (from the temporary ``lists`` relation) and append the
    history rows, all at once."""
    engine = session.engine
    history = _temporary(session, "segments_upload_history_next", _history(session, history_rows))
    try:
        session.apply([
            ReplaceTable(engine.table(md.UPLOADS_TABLE), exp.select("*").from_(lists)),
            ReplaceTable(engine.table(HISTORY), exp.select("*").from_(history)),
        ])
    except EngineError as error:
        raise SegmentsError(f"writing the uploaded list failed, the warehouse is unchanged: {error}") from None
    if history_rows:  # a list changed: the next build joins it again, in full
        from segments import refresh  # (not imported by a preview, which reads lists too)

        refresh.forget(session)


def upload(
    session: Session, project: m.Project, segment: str, path: Path, mode: str = "replace", country: str | None = None,
) -> Report:
    """Load ``path`` into the list of upload segment ``segment``: ``replace`` it,
    ``append`` to it or ``remove`` its keys from it, in one change.

    Raises:
        SegmentsError: not an upload segment (or one fed by its ``file:``), a bad
            file or row, no valid key, or a failed write (nothing changed).
    """
    spec = next((s for s in project.segments if s.name == segment), None)
    if spec is None or spec.upload is None:
        uploads_ = [s.name for s in project.segments if s.upload is not None and s.upload.file is None]
        raise SegmentsError(
            f"{segment!r} is not an upload segment (a spec with upload: {{match_on: ...}}); "
            f"upload segments: {', '.join(uploads_) or '(none)'}"
        )
    if spec.upload.file is not None:
        raise SegmentsError(
            f"{segment}'s list is its file {spec.upload.file.name}, which every build loads: edit the file, "
            "or drop file: from the spec to upload lists"
        )
    if mode not in MODES:
        raise SegmentsError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
    match_on = spec.upload.match_on
    if country is not None and project.catalog.default_country is None:
        # the users' phones are compared as digits then: E.164 keys would match no one
        raise SegmentsError("--default-country needs a default_country in _catalog.yml, which the users' phones are read with")
    country = country or project.catalog.default_country
    with session.staging() as duck:
        read = read_keys(duck, "segments_upload_keys", path, match_on, country)
        word = "row" if path.suffix.lower() == ".parquet" else "line"
        if not read.distinct:
            shown = f" ({word}s {_listed(read.invalid, read.invalid_count)})" if read.invalid_count else ""
            raise SegmentsError(f"{path.name}: no valid {match_on} in {read.rows} rows{shown}; nothing was loaded")
        with session.staged(duck, ["segments_upload_keys"]) as staged:
            new = exp.select("upload_key").from_(staged["segments_upload_keys"])
            current = _lists(session)
            mine = exp.select("upload_key").from_(current).where(_is("segment_name", segment)).where(_is("match_on", match_on)) if current else None
            before = _count(session, current, exp.and_(_is("segment_name", segment), _is("match_on", match_on))) if current else 0
            if mode == "replace" or mine is None:
                keys_of: exp.Query = new if mode != "remove" else _empty({"upload_key": "VARCHAR"})
            elif mode == "append":
                keys_of = exp.union(mine, new, distinct=True)
            else:
                keys_of = exp.except_(mine, new, distinct=True)
            lists = _temporary(session, "segments_uploads_next", _list_rows(session, {segment: (match_on, keys_of)}))
            after = _count(session, lists, _is("segment_name", segment))
            _write(session, lists, [_history_row(segment, match_on, mode, "upload", read, before, after)])
    matched, unmatched = match_counts(session, project, segment)
    return Report(segment, mode, read, word, before, after, matched, unmatched)


# ---- lists from files, at build time ---------------------------------------------------


def _file_specs(project: m.Project, only: Sequence[str] | None = None) -> list[m.SegmentSpec]:
    return [
        s for s in project.segments
        if s.upload is not None and s.upload.file is not None and (only is None or s.name in only)
    ]


@contextmanager
def _file_lists(
    session: Session, project: m.Project, only: Sequence[str] | None = None
) -> Iterator[tuple[exp.Query, dict[str, tuple[str, KeysRead]]]]:
    """The rows every list holds once the files of ``project`` (of the segments
    ``only``) replace their segments' lists, and what each file held."""
    country = project.catalog.default_country
    with session.staging() as duck:
        staged_names, reads = {}, {}
        for index, spec in enumerate(_file_specs(project, only)):
            assert spec.upload is not None and spec.upload.file is not None
            name = f"segments_file_keys_{index}"
            reads[spec.name] = (spec.upload.match_on, read_keys(duck, name, spec.upload.file, spec.upload.match_on, country))
            staged_names[spec.name] = name
        with session.staged(duck, list(staged_names.values())) as staged:
            replaced = {
                segment: (reads[segment][0], exp.select("upload_key").from_(staged[name]))
                for segment, name in staged_names.items()
            }
            yield _list_rows(session, replaced), reads


def needs_lists(project: m.Project) -> bool:
    return any(s.upload is not None for s in project.segments)


def reads_files(project: m.Project) -> bool:
    """Whether :func:`prepare` reads list files: their keys then stay in temporary
    tables of the session until it closes."""
    return bool(_file_specs(project))


def prepare(session: Session, project: m.Project) -> None:
    """Before a build: load the specs' ``file:`` lists into the warehouse (a history
    row for each list that changed), and create the table of lists if it is missing.

    Raises:
        SegmentsError: a file that cannot be read (nothing changed).
    """
    if not needs_lists(project):
        return
    current = _lists(session)  # what staging the files below creates never shadows it
    if current is not None and not _file_specs(project):
        return
    with _file_lists(session, project) as (rows, reads):
        lists = _temporary(session, "segments_uploads_next", rows)
        history = []
        for segment, (match_on, read) in sorted(reads.items()):
            mine = _is("segment_name", segment)
            after = _count(session, lists, mine)
            if current is None:
                before, changed = 0, after > 0
            else:
                before = _count(session, current, mine.copy())
                old = exp.select("match_on", "upload_key").from_(current).where(mine.copy())
                new = exp.select("match_on", "upload_key").from_(lists).where(mine.copy())
                changed = before != after or bool(session.rows(exp.except_(new, old, distinct=True).limit(1)))
            if changed:
                history.append(_history_row(segment, match_on, "replace", "file", read, before, after))
        if history or current is None:
            _write(session, lists, history)


@contextmanager
def overlay(session: Session, project: m.Project, segments: Sequence[str], name: str = "segments_uploads_overlay") -> Iterator[exp.Table | None]:
    """For a query run without a build (preview, review): a temporary relation
    ``name`` of the session holding the lists of ``segments`` as ``project``'s files
    make them (the others as the warehouse has them), to read in place of the
    warehouse's table; None when none of them is an upload."""
    if not any(s.upload is not None for s in project.segments if s.name in segments):
        yield None
        return
    with _file_lists(session, project, segments) as (rows, _):
        yield _temporary(session, name, rows)


def write_file_lists(duck: duckdb.DuckDBPyConnection, project: m.Project) -> None:
    """The table of lists in a DuckDB of its own (``main``), from ``project``'s files
    (``segments test`` runs on an in-memory DuckDB; lists fed by ``segments upload``
    are empty there)."""
    parts: list[exp.Query] = []
    for index, spec in enumerate(_file_specs(project)):
        assert spec.upload is not None and spec.upload.file is not None
        name = f"segments_file_keys_{index}"
        read_keys(duck, name, spec.upload.file, spec.upload.match_on, project.catalog.default_country)
        parts.append(_rows_of(spec.name, spec.upload.match_on, exp.select("upload_key").from_(name)))
    table = exp.table_(md.UPLOADS_TABLE, db="main")
    duck.execute(exp.Create(kind="TABLE", replace=True, this=table, expression=_union(parts, _LIST_COLUMNS)).sql("duckdb"))


def match_counts(session: Session, project: m.Project, segment: str, lists: exp.Table | None = None) -> tuple[int | None, int | None]:
    """(users whose key is in the segment's list, keys of the list no user has),
    from the catalog's users table and ``lists`` (default: the warehouse's);
    (None, None) when there is no users table."""
    spec = project.spec(segment)
    assert spec.upload is not None
    users = project.catalog.users
    users_table = session.engine.table(users.relation.name, users.relation.schema)
    if not session.columns(users_table.db, users_table.name):
        return None, None
    lists = lists or _lists(session)
    if lists is None:
        return 0, 0
    match_on = spec.upload.match_on
    column = users.key if match_on == "user_id" else users.attributes[match_on].column
    user_key = keys.sql_key(match_on, exp.cast(exp.column(column, quoted=True), "VARCHAR"), project.catalog.default_country)
    listed = exp.select("upload_key").from_(lists.copy()).where(_is("segment_name", segment)).where(_is("match_on", match_on))
    user_keys = exp.select(exp.Literal.number(1)).from_(users_table)
    matched_users = exp.select(exp.Count(this=exp.Star())).from_(users_table.copy()).where(user_key.copy().isin(query=listed))
    unmatched = exp.select(exp.Count(this=exp.Star())).from_(
        exp.Subquery(this=listed.copy(), alias=exp.TableAlias(this=exp.to_identifier("l")))
    ).where(exp.not_(exp.Exists(this=user_keys.where(user_key.copy().eq(exp.column("upload_key", "l"))))))
    return int(session.rows(matched_users)[0][0]), int(session.rows(unmatched)[0][0])
