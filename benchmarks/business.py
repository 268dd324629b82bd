"""The application's own table for W8 and W1tx (``bench_orders`` in schema public)."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, DateTime, Identity, Integer, MetaData, Table, Text, func

__all__ = ["ORDER", "business", "orders"]

business = MetaData()
orders = Table(
    "bench_orders",
    business,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("customer", Text, nullable=False),
    Column("amount_cents", Integer, nullable=False),
    Column("created_at", DateTime(timezone=True), server_default=func.now(), nullable=False),
)
"""W8's and W1tx's business table (the application's own row, in schema public)."""

ORDER = {"customer": "c-42", "amount_cents": 1999}
"""The business row W1tx inserts."""
