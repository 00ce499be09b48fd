"""Products and per-store stock. Open orders hold reservations; available = on_hand - reserved."""
from sqlalchemy import ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from models import db


class Product(db.Model):
    __tablename__ = "products"

    id: Mapped[int] = mapped_column(primary_key=True)
    sku: Mapped[str] = mapped_column(String(40), unique=True)
    name: Mapped[str] = mapped_column(String(160))
    price_cents: Mapped[int] = mapped_column(Integer, default=0)

    def __str__(self):
        return f"{self.sku} {self.name}"


class StockLevel(db.Model):
    __tablename__ = "stock_levels"
    __table_args__ = (UniqueConstraint("store_id", "product_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    store_id: Mapped[int] = mapped_column(ForeignKey("stores.id"), index=True)
    product_id: Mapped[int] = mapped_column(ForeignKey("products.id"), index=True)
    on_hand: Mapped[int] = mapped_column(Integer, default=0)
    reserved: Mapped[int] = mapped_column(Integer, default=0)

    store = relationship("Store")
    product = relationship("Product")

    @property
    def available(self):
        return self.on_hand - self.reserved

    def to_dict(self):
        return {"store_id": self.store_id, "product_id": self.product_id,
                "sku": self.product.sku, "on_hand": self.on_hand,
                "reserved": self.reserved, "available": self.available}
