"""The shop's own models, on its own declarative Base (backfill_sa never touches it)."""

from __future__ import annotations

from sqlalchemy import BigInteger, Identity, Integer, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

SCHEMA = "shop"


class Base(DeclarativeBase):
    """The application's declarative base."""


class Order(Base):
    """An order; a job confirms it after the transaction that created it commits."""

    __tablename__ = "orders"
    __table_args__ = {"schema": SCHEMA}  # noqa: RUF012

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    email: Mapped[str] = mapped_column(Text)
    total_cents: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(Text, default="new")
