"""The result store: one SQL row per candidate, and a run table that makes runs resumable.

SQLite by default; any SQLAlchemy URL works (e.g. PostgreSQL for a cluster). A run is
keyed by (task, method, config hash, seed). Its rows are written in one transaction with
its final status, so a killed run leaves nothing half-written and a re-run redoes only what
did not finish. Candidate models are saved as files beside the store (see `checkpoint`).
"""
from __future__ import annotations

import datetime as dt
import os
import time
from pathlib import Path
from typing import Any, Iterable

import sqlalchemy as sa

DEFAULT_STORE = os.environ.get("BENCH_STORE", "bench-results/results.db")

_meta = sa.MetaData()

runs = sa.Table(
    "runs",
    _meta,
    sa.Column("run_key", sa.String(200), primary_key=True),
    sa.Column("task", sa.String(64), nullable=False),
    sa.Column("method", sa.String(64), nullable=False),
    sa.Column("config_hash", sa.String(32), nullable=False),
    sa.Column("seed", sa.Integer, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),  # running | ok | failed
    sa.Column("reason", sa.Text),
    sa.Column("started_at", sa.String(32)),
    sa.Column("finished_at", sa.String(32)),
    sa.Column("seconds", sa.Float),
)

results = sa.Table(
    "results",
    _meta,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("run_key", sa.String(200), nullable=False, index=True),
    sa.Column("task", sa.String(64), nullable=False, index=True),
    sa.Column("method", sa.String(64), nullable=False, index=True),
    sa.Column("seed", sa.Integer, nullable=False),
    sa.Column("config_hash", sa.String(32), nullable=False),
    sa.Column("scale", sa.String(16)),
    sa.Column("candidate", sa.Integer),  # index of the candidate within its run
    sa.Column("label", sa.String(200)),  # knob setting, e.g. "kappa_min=0.25"
    sa.Column("status", sa.String(16), nullable=False),  # ok | failed
    sa.Column("reason", sa.Text),  # why it failed
    sa.Column("widths", sa.JSON),
    sa.Column("params", sa.BigInteger),
    sa.Column("nonzero_params", sa.BigInteger),
    sa.Column("macs", sa.BigInteger),  # per example input
    sa.Column("flops", sa.Float),  # 2 x MACs, per second of audio (or per example): see flops_unit
    sa.Column("nonzero_flops", sa.Float),  # same, skipping zero weights (unstructured sparsity)
    sa.Column("flops_unit", sa.String(64)),
    sa.Column("uncounted_ops", sa.JSON),  # operators the counter saw but could not count
    sa.Column("metric", sa.String(32)),  # name of the primary error metric
    sa.Column("error", sa.Float),  # primary error, lower is better
    sa.Column("breakdowns", sa.JSON),  # primary metric per group
    sa.Column("secondary", sa.JSON),  # other metrics
    sa.Column("train_seconds", sa.Float),  # training of this candidate
    sa.Column("search_seconds", sa.Float),  # all training the method spent to produce it
    sa.Column("train_steps", sa.Integer),  # optimizer steps in the candidate's lineage (the training budget)
    sa.Column("search_steps", sa.Integer),  # all optimizer steps the method spent to produce it
    sa.Column("target_ratio", sa.Float),  # FLOP/s target as a fraction of the dense model's; null: none (dense, references)
    sa.Column("achieved_ratio", sa.Float),  # the candidate's FLOP/s (or non-zero FLOP/s) over the dense model's
    sa.Column("target_met", sa.Boolean),  # achieved_ratio within 10 % of target_ratio
    sa.Column("latency_ms", sa.Float),  # median CPU latency on the example input (PyTorch, measurement phase)
    sa.Column("latency", sa.JSON),  # measurement phase: one record per runtime and input shape (bench.measure)
    sa.Column("model_path", sa.Text),  # relative to the models folder
    sa.Column("info", sa.JSON),  # what the method recorded
    sa.Column("task_config", sa.JSON),
    sa.Column("method_config", sa.JSON),
    sa.Column("config", sa.JSON),  # everything resolved: task, method, recipe, scale, seed
    sa.Column("versions", sa.JSON),
    sa.Column("git_rev", sa.String(64)),
    sa.Column("machine", sa.JSON),
    sa.Column("created_at", sa.String(32)),
)

RESULT_COLUMNS = [c.name for c in results.columns]


class StoreError(RuntimeError):
    """The store cannot be opened or written; the message is one line."""


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _to_url(url_or_path: str) -> tuple[str, Path | None]:
    """An SQLAlchemy URL, and the SQLite file it points at (None for server databases)."""
    if "://" in url_or_path:
        if url_or_path.startswith("sqlite:///"):
            return url_or_path, Path(url_or_path[len("sqlite:///") :])
        return url_or_path, None
    return f"sqlite:///{Path(url_or_path)}", Path(url_or_path)


class ResultStore:
    """Results database plus the folder where candidate models are saved."""

    def __init__(self, url_or_path: str | None = None, models_dir: str | Path | None = None):
        self.location = url_or_path or DEFAULT_STORE
        self.url, self.sqlite_path = _to_url(self.location)
        if self.sqlite_path is not None:
            self._prepare_sqlite_dir(self.sqlite_path)
        if models_dir is None:
            base = self.sqlite_path.parent if self.sqlite_path is not None else Path("bench-results")
            stem = self.sqlite_path.stem if self.sqlite_path is not None else "results"
            models_dir = base / f"{stem}-models"
        self.models_dir = Path(models_dir)
        try:
            self.engine = sa.create_engine(self.url, connect_args=self._connect_args())
        except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError, ImportError) as err:
            raise StoreError(f"cannot use store {self.location!r}: {err}; give a file path, or an SQLAlchemy URL whose driver is installed") from None
        if self.sqlite_path is not None:
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)
        self._create_tables()

    def _create_tables(self) -> None:
        # Several workers may open a new store at once: one of two racing CREATEs fails
        # with "already exists" (or "locked"), and a second try then finds the tables.
        for attempt in range(5):
            try:
                _meta.create_all(self.engine)
                self._add_new_columns()
                return
            except sa.exc.OperationalError as err:
                if attempt == 4 or not any(w in str(err) for w in ("already exists", "locked", "duplicate column")):
                    raise StoreError(f"cannot open store {self.location!r}: {_first_line(err)}") from None
                time.sleep(0.2 * (attempt + 1))
            except sa.exc.SQLAlchemyError as err:
                raise StoreError(f"cannot open store {self.location!r}: {_first_line(err)}") from None

    def _add_new_columns(self) -> None:
        """Columns added since a store was created get added to it (nullable, so old rows stay valid)."""
        have = {c["name"] for c in sa.inspect(self.engine).get_columns("results")}
        with self.engine.begin() as conn:
            for column in results.columns:
                if column.name not in have:
                    kind = column.type.compile(dialect=self.engine.dialect)
                    conn.execute(sa.text(f'ALTER TABLE results ADD COLUMN "{column.name}" {kind}'))

    def _connect_args(self) -> dict:
        # Concurrent writers (Ray workers) wait for the lock instead of failing at once.
        return {"timeout": 60} if self.sqlite_path is not None else {}

    def _prepare_sqlite_dir(self, path: Path) -> None:
        parent = path.parent if str(path.parent) else Path(".")
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise StoreError(f"cannot create store folder {parent}: {err.strerror}; pass --store with a writable path") from None
        target = path if path.exists() else parent
        if not os.access(target, os.W_OK):
            raise StoreError(f"store {path} is not writable; pass --store with a writable path or an SQLAlchemy URL")
        if path.is_dir():
            raise StoreError(f"store {path} is a folder; pass --store with a file path such as {path / 'results.db'}")

    # --- runs -----------------------------------------------------------------------
    def run_status(self, run_key: str) -> str | None:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(runs.c.status).where(runs.c.run_key == run_key)).scalar()

    def start_run(self, run_key: str, task: str, method: str, config_hash: str, seed: int) -> None:
        """Mark a run as running (a crashed run stays 'running' until it is redone)."""
        with self._transaction() as conn:
            conn.execute(runs.delete().where(runs.c.run_key == run_key))
            conn.execute(
                runs.insert().values(run_key=run_key, task=task, method=method, config_hash=config_hash, seed=seed, status="running", started_at=_now())
            )

    def finish_run(self, run_key: str, rows: Iterable[dict[str, Any]], status: str, reason: str | None, seconds: float) -> None:
        """Replace the run's rows and set its final status, all in one transaction."""
        rows = [{**row, "run_key": run_key, "created_at": _now()} for row in rows]
        with self._transaction() as conn:
            conn.execute(results.delete().where(results.c.run_key == run_key))
            if rows:
                conn.execute(results.insert(), rows)
            conn.execute(runs.update().where(runs.c.run_key == run_key).values(status=status, reason=reason, finished_at=_now(), seconds=seconds))

    def set_latency(self, row_id: int, latency_ms: float, records: list[dict[str, Any]]) -> None:
        """Store a candidate's measured latency (the measurement phase runs after its run finished)."""
        with self._transaction() as conn:
            conn.execute(results.update().where(results.c.id == row_id).values(latency_ms=latency_ms, latency=records))

    def _transaction(self):
        return _Retrying(self.engine)

    # --- reading ----------------------------------------------------------------------
    def rows(self, task: str | None = None, method: str | None = None, run_key: str | None = None) -> list[dict[str, Any]]:
        """All result rows (optionally of one task, method and/or run), oldest first."""
        query = sa.select(results).order_by(results.c.id)
        if run_key:
            query = query.where(results.c.run_key == run_key)
        if task:
            query = query.where(results.c.task == task)
        if method:
            query = query.where(results.c.method == method)
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(query)]

    def dataframe(self, task: str | None = None, method: str | None = None):
        """The rows as a pandas DataFrame (columns as in the `results` table)."""
        import pandas as pd

        return pd.DataFrame(self.rows(task, method), columns=RESULT_COLUMNS)


class _Retrying:
    """`engine.begin()` that retries SQLite's 'database is locked' a few times."""

    def __init__(self, engine: sa.Engine, attempts: int = 8):
        self.engine, self.attempts = engine, attempts

    def __enter__(self):
        for attempt in range(self.attempts):
            try:
                self._ctx = self.engine.begin()
                return self._ctx.__enter__()
            except sa.exc.OperationalError as err:
                if "locked" not in str(err) or attempt == self.attempts - 1:
                    raise StoreError(f"cannot write store: {_first_line(err)}") from None
                time.sleep(0.1 * 2**attempt)

    def __exit__(self, *exc):
        try:
            return self._ctx.__exit__(*exc)
        except sa.exc.OperationalError as err:
            raise StoreError(f"cannot write store: {_first_line(err)}") from None


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")  # readers do not block the writer
    cursor.execute("PRAGMA busy_timeout=60000")
    cursor.close()


def _first_line(err: Exception) -> str:
    text = str(getattr(err, "orig", None) or err)
    return text.strip().splitlines()[0] if text.strip() else type(err).__name__
