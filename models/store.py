"""A dispensary location."""
from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from models import db


class Store(db.Model):
    __tablename__ = "stores"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(120), unique=True)
    licence_number: Mapped[str] = mapped_column(String(64), unique=True)
    timezone: Mapped[str] = mapped_column(String(64), default="America/Los_Angeles")

    def __str__(self):
        return self.name
