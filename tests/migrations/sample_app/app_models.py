"""The sample application's own models: its own Base and MetaData, nothing of ours.

Built by a function so each test can put the application in a schema of its own.
"""

from __future__ import annotations

from sqlalchemy import MetaData, Numeric, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def make_base(schema: str) -> type[DeclarativeBase]:
    """Return the application's declarative Base, with its tables in ``schema``."""

    class Base(DeclarativeBase):
        metadata = MetaData(schema=schema)

    class Order(Base):
        __tablename__ = "orders"

        id: Mapped[int] = mapped_column(primary_key=True)
        customer: Mapped[str] = mapped_column(String(200))
        total: Mapped[float] = mapped_column(Numeric(12, 2))

    return Base
