"""The result store's SQL tables: runs, their candidates' rows (results), and claims.

`bench.store.ResultStore` reads and writes them; a store made by another version of the
benchmark is checked against these columns when it is opened.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

runs = sa.Table(
    "runs",
    metadata,
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
    metadata,
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
    sa.Column(
        "metric_info", sa.JSON
    ),  # the task's description of it: label, chance level, iso-quality tolerance, breakdowns
    sa.Column("error", sa.Float),  # primary error, lower is better
    sa.Column("breakdowns", sa.JSON),  # primary metric per group
    sa.Column("secondary", sa.JSON),  # other metrics
    sa.Column("train_seconds", sa.Float),  # training of this candidate
    sa.Column("search_seconds", sa.Float),  # all training the method spent to produce it
    sa.Column("train_steps", sa.Integer),  # optimizer steps in the candidate's lineage (the training budget)
    sa.Column("search_steps", sa.Integer),  # all optimizer steps the method spent to produce it
    sa.Column(
        "target_ratio", sa.Float
    ),  # FLOP/s target as a fraction of the dense model's; null: none (dense, references)
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

# A run being trained: its holder refreshes `heartbeat` (seconds since the epoch); once it is
# older than the claim's time-to-live the holder is taken as dead and another may take over.
claims = sa.Table(
    "claims",
    metadata,
    sa.Column("run_key", sa.String(200), primary_key=True),
    sa.Column("owner", sa.String(200), nullable=False),  # host:pid:token of the process training the run
    sa.Column("heartbeat", sa.Float, nullable=False),
)

RESULT_COLUMNS = [c.name for c in results.columns]
