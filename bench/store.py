"""The result store: one SQL row per candidate, and a run table that makes runs resumable.

SQLite by default; any SQLAlchemy URL works (e.g. PostgreSQL for a cluster). A run is
keyed by (task, method, config hash, seed). Its rows are written in one transaction with
its final status, so a killed run leaves nothing half-written and a re-run redoes only what
did not finish. Candidate models are saved as files beside the store (see `checkpoint`).
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from bench.store_tables import RESULT_COLUMNS, claims, metadata, results, runs

DEFAULT_STORE = os.environ.get("BENCH_STORE", "bench-results/results.db")


# A claim whose heartbeat is older than this (seconds) belongs to a dead process and is taken over.
CLAIM_TTL = float(os.environ.get("BENCH_CLAIM_TTL", "120"))
OWNER = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"  # this process, as a claim's holder


def _dead_here(owner: str) -> bool:
    """Whether claim holder `owner` is a process of this host that no longer exists."""
    host, _, rest = owner.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return False
    if int(pid) == os.getpid():
        return owner != OWNER  # our pid, another token: a process before us
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    try:  # a zombie (exited, not yet reaped: an orphan where init does not reap) is dead too
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] == "Z"
    except (OSError, IndexError):
        return False


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
    """Results database plus the folder where candidate models are saved.

    `read_only`: open an existing store for reading (results, report, list) and never
    create or change it; without it the store is created if missing and must be writable.
    """

    def __init__(self, url_or_path: str | None = None, models_dir: str | Path | None = None, read_only: bool = False):
        location = url_or_path or DEFAULT_STORE
        self.url, self.sqlite_path = _to_url(location)
        self.location = _masked(location)  # what messages show: never a password
        self.read_only = read_only
        if self.sqlite_path is not None:
            (self._check_sqlite_file if read_only else self._prepare_sqlite_dir)(self.sqlite_path)
        if models_dir is None:
            base = self.sqlite_path.parent if self.sqlite_path is not None else Path("bench-results")
            stem = self.sqlite_path.stem if self.sqlite_path is not None else "results"
            models_dir = base / f"{stem}-models"
        self.models_dir = Path(models_dir)
        url = self.url
        if read_only and self.sqlite_path is not None:  # SQLite's own read-only mode: no file, journal or table is made
            url = f"sqlite:///file:{self.sqlite_path.resolve()}?{_read_only_mode(self.sqlite_path)}&uri=true"
        try:
            self.engine = sa.create_engine(url, connect_args=self._connect_args())
        except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError, ImportError) as err:
            raise StoreError(
                f"cannot use store {self.location!r}: {err}; give a file path, or an SQLAlchemy URL whose driver is "
                "installed"
            ) from None
        if self.sqlite_path is not None:
            sa.event.listen(self.engine, "connect", _sqlite_busy_timeout)
        if not read_only:
            self._check_schema(allow_empty=True)  # before anything is written to a file of another program
            if self.sqlite_path is not None:
                self._use_wal()
            self._create_tables()
            self._check_models_dir()
        self._check_schema(allow_empty=False)

    def _check_schema(self, allow_empty: bool) -> None:
        """One line, not a traceback, for a database of another program or an older schema."""
        try:
            inspector = sa.inspect(self.engine)
            tables = set(inspector.get_table_names())
            ours = {t.name for t in (runs, results, claims)}
            # A writer that finds only some of our tables sees another process creating them
            # (one CREATE at a time): create_all completes the set.
            if allow_empty and tables <= ours and not ("results" in tables and "runs" in tables):
                return
            if "results" not in tables or "runs" not in tables:
                what = "is empty" if not tables else f"has tables {', '.join(sorted(tables)[:4])} but no results table"
                raise StoreError(
                    f"store {self.location!r} is not a result store of this benchmark (it {what}); check --store"
                )
            for table in (runs, results, claims):
                if table.name not in tables:
                    continue  # a table added later is created on the next write
                have = {c["name"] for c in inspector.get_columns(table.name)}
                missing = [c.name for c in table.columns if c.name not in have]
                if missing:
                    lacks = f"table {table.name} lacks {', '.join(missing)}"
                    raise StoreError(
                        f"store {self.location!r} has an older schema ({lacks}); "
                        "write to a new store (--store) or rerun the runs into one"
                    )
        except sa.exc.SQLAlchemyError as err:
            raise StoreError(f"cannot open store {self.location!r}: {_first_line(err)}") from None

    def _use_wal(self) -> None:
        # Kept in the file once set: readers then never block the writer.
        try:
            with self.engine.connect() as conn:
                conn.exec_driver_sql("PRAGMA journal_mode=WAL")
        except sa.exc.SQLAlchemyError as err:
            raise StoreError(f"cannot open store {self.location!r}: {_first_line(err)}") from None

    def _check_models_dir(self) -> None:
        # Found here, before any training, not when the first model is saved.
        try:
            self.models_dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise StoreError(
                f"cannot create models folder {self.models_dir}: {err.strerror}; "
                "pass --models-dir with a writable folder"
            ) from None
        if not os.access(self.models_dir, os.W_OK | os.X_OK):
            raise StoreError(
                f"models folder {self.models_dir} is not writable; pass --models-dir with a writable folder"
            )

    def _check_sqlite_file(self, path: Path) -> None:
        if not path.exists():
            raise StoreError(f"no store at {path}; check --store (or BENCH_STORE), or create it with `bench run`")
        if path.is_dir():
            raise StoreError(f"store {path} is a folder; pass --store with a file path such as {path / 'results.db'}")

    @property
    def report_dir(self) -> Path:
        """Where `bench report` writes by default: report/ beside the store, NAME-report/ for a store
        NAME.db other than results.db, so stores in one folder do not overwrite each other's report."""
        stem = self.sqlite_path.stem if self.sqlite_path is not None else "results"
        return self.models_dir.parent / ("report" if stem == "results" else f"{stem}-report")

    def _create_tables(self) -> None:
        # Several workers may open a new store at once: one of two racing CREATEs fails
        # with "already exists" (or "locked"), and a second try then finds the tables.
        for attempt in range(5):
            try:
                metadata.create_all(self.engine)
                return
            except sa.exc.OperationalError as err:
                if attempt == 4 or not any(w in str(err) for w in ("already exists", "locked")):
                    raise StoreError(f"cannot open store {self.location!r}: {_first_line(err)}") from None
                time.sleep(0.2 * (attempt + 1))
            except sa.exc.SQLAlchemyError as err:
                raise StoreError(f"cannot open store {self.location!r}: {_first_line(err)}") from None

    def _connect_args(self) -> dict:
        # Concurrent writers (Ray workers) wait for the lock instead of failing at once.
        return {"timeout": 60} if self.sqlite_path is not None else {}

    def _prepare_sqlite_dir(self, path: Path) -> None:
        parent = path.parent if str(path.parent) else Path(".")
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise StoreError(
                f"cannot create store folder {parent}: {err.strerror}; pass --store with a writable path"
            ) from None
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
                runs.insert().values(
                    run_key=run_key,
                    task=task,
                    method=method,
                    config_hash=config_hash,
                    seed=seed,
                    status="running",
                    started_at=_now(),
                )
            )

    def finish_run(
        self, run_key: str, rows: Iterable[dict[str, Any]], status: str, reason: str | None, seconds: float
    ) -> None:
        """Replace the run's rows and set its final status, all in one transaction."""
        rows = [{**row, "run_key": run_key, "created_at": _now()} for row in rows]
        with self._transaction() as conn:
            conn.execute(results.delete().where(results.c.run_key == run_key))
            if rows:
                conn.execute(results.insert(), rows)
            conn.execute(
                runs.update()
                .where(runs.c.run_key == run_key)
                .values(status=status, reason=reason, finished_at=_now(), seconds=seconds)
            )
            conn.execute(claims.delete().where(claims.c.run_key == run_key))

    # --- claims: one process trains a run at a time -------------------------------------
    def claim(self, run_key: str, owner: str = "", ttl: float | None = None) -> bool:
        """Take the claim on `run_key` for `owner` (default: this process); True if it is ours.

        A claim held by another is taken over only once its holder is dead: its heartbeat is
        older than `ttl` seconds, or it names a process of this host that no longer exists."""
        owner, ttl = owner or OWNER, CLAIM_TTL if ttl is None else ttl
        with self._transaction() as conn:
            query = sa.select(claims.c.owner, claims.c.heartbeat).where(claims.c.run_key == run_key)
            held = conn.execute(query).first()
            if held is not None:
                if held.owner != owner and not (time.time() - held.heartbeat > ttl or _dead_here(held.owner)):
                    return False
                unchanged = (
                    claims.c.run_key == run_key,
                    claims.c.owner == held.owner,
                    claims.c.heartbeat == held.heartbeat,
                )
                taken = conn.execute(claims.update().where(*unchanged).values(owner=owner, heartbeat=time.time()))
                return taken.rowcount == 1  # 0: another process took it over first
        try:
            with self._transaction() as conn:
                conn.execute(claims.insert().values(run_key=run_key, owner=owner, heartbeat=time.time()))
            return True
        except (sa.exc.IntegrityError, StoreError) as err:  # another process claimed it between the two transactions
            if isinstance(err, StoreError) and "UNIQUE" not in str(err) and "duplicate" not in str(err):
                raise
            return False

    def heartbeat(self, run_key: str, owner: str = "") -> bool:
        """Refresh our claim on `run_key`; False if it is no longer ours."""
        with self._transaction() as conn:
            done = conn.execute(
                claims.update()
                .where(claims.c.run_key == run_key, claims.c.owner == (owner or OWNER))
                .values(heartbeat=time.time())
            )
            return done.rowcount == 1

    def release(self, run_key: str, owner: str = "") -> None:
        with self._transaction() as conn:
            conn.execute(claims.delete().where(claims.c.run_key == run_key, claims.c.owner == (owner or OWNER)))

    def claim_holder(self, run_key: str) -> str | None:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(claims.c.owner).where(claims.c.run_key == run_key)).scalar()

    def dead_claims(self) -> dict[str, int]:
        """Run key -> process id, of claims held by processes of this host that no longer exist."""
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(claims.c.run_key, claims.c.owner)).all()
        return {key: int(owner.split(":")[1]) for key, owner in rows if _dead_here(owner)}

    def release_dead(self, run_key: str) -> None:
        """Drop the claim on `run_key` if its holder is a dead process of this host."""
        holder = self.claim_holder(run_key)
        if holder is not None and _dead_here(holder):
            with self._transaction() as conn:
                conn.execute(claims.delete().where(claims.c.run_key == run_key, claims.c.owner == holder))

    @contextmanager
    def claimed(self, run_key: str) -> Iterator[bool]:
        """Claim `run_key` for the block, with a heartbeat thread; yields whether we hold it."""
        if not self.claim(run_key):
            yield False
            return
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(CLAIM_TTL / 4):
                try:
                    self.heartbeat(run_key)
                except Exception:  # a store hiccup: the next beat tries again
                    pass

        thread = threading.Thread(target=beat, name=f"heartbeat {run_key}", daemon=True)
        thread.start()
        try:
            yield True
        finally:
            stop.set()
            thread.join()
            self.release(run_key)

    def set_latency(self, row_id: int, latency_ms: float, records: list[dict[str, Any]]) -> None:
        """Store a candidate's measured latency (the measurement phase runs after its run finished)."""
        with self._transaction() as conn:
            conn.execute(results.update().where(results.c.id == row_id).values(latency_ms=latency_ms, latency=records))

    def _transaction(self):
        return _Retrying(self.engine)

    # --- reading ----------------------------------------------------------------------
    def rows(
        self, task: str | None = None, method: str | None = None, run_key: str | None = None
    ) -> list[dict[str, Any]]:
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


def _read_only_mode(path: Path) -> str:
    """SQLite URI parameters that read `path` without writing beside it. With no -wal file no
    writer has the database open, and `immutable` needs no -shm file either; otherwise
    plain read-only mode shares the writer's -wal and -shm files."""
    return "mode=ro" if Path(f"{path}-wal").exists() else "mode=ro&immutable=1"


def _sqlite_busy_timeout(dbapi_conn, _record) -> None:
    dbapi_conn.execute("PRAGMA busy_timeout=60000")


def _masked(location: str) -> str:
    """`location` with any password in the URL replaced by ***."""
    if "://" not in location:
        return location
    try:
        return sa.engine.make_url(location).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return location.split("://", 1)[0] + "://..."


def _first_line(err: Exception) -> str:
    text = str(getattr(err, "orig", None) or err)
    return text.strip().splitlines()[0] if text.strip() else type(err).__name__
