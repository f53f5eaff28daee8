"""An order service: POST /orders writes the order and enqueues its confirmation email in
one transaction, so that there is never an email without an order, nor an order without
its email.

    VESPER_DATABASE_URL=postgresql://... uvicorn --factory examples.orders:create_app
    VESPER_DATABASE_URL=postgresql://... vesper worker --app examples.orders:jobs

The orders live in the same database as vesper's jobs (SQLite or PostgreSQL).
"""

from __future__ import annotations

import functools
import logging
from datetime import UTC, datetime
from typing import Any

import msgspec
from litestar import Litestar, post
from litestar.exceptions import HTTPException
from litestar.params import JSONBody
from sqlalchemy import DateTime, String, create_engine, update
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

import vesper

log = logging.getLogger("examples.orders")


class Base(DeclarativeBase):
    pass


class Order(Base):
    __tablename__ = "orders"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(320))
    item: Mapped[str] = mapped_column(String(200))
    quantity: Mapped[int]
    emailed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class NewOrder(msgspec.Struct):
    email: str
    item: str
    quantity: int = 1
    card: str = "ok"  # "declined": the payment fails after the order is written


class PaymentDeclined(Exception):
    pass


def charge(card: str, order: Order) -> None:
    """Stands in for a payment provider, called once the order exists."""
    if card == "declined":
        raise PaymentDeclined(f"card declined for order {order.id}")


def place_order(session: Session, data: NewOrder, queue: vesper.App) -> Order:
    """The order, its email job and the payment: all of it commits, or none of it."""
    with session.begin():
        order = Order(email=data.email, item=data.item, quantity=data.quantity)
        session.add(order)
        session.flush()  # the order's id, for the email's payload
        queue.enqueue(
            "send_order_email",
            {"order_id": order.id, "to": order.email},
            idempotency_key=f"order-email-{order.id}",
            connection=session,  # in this transaction: gone if it rolls back
        )
        charge(data.card, order)  # raises: the order and its job roll back together
    return order


def database_url(queue: vesper.App) -> str:
    """vesper's database (VESPER_DATABASE_URL or the DB_* variables), through psycopg 3
    where the URL names no driver, as vesper opens it."""
    url = make_url(queue.settings.database_url)
    if url.drivername in ("postgresql", "postgres"):
        url = url.set(drivername="postgresql+psycopg")
    return url.render_as_string(hide_password=False)


@functools.cache
def engine_of(url: str) -> Engine:
    """One engine per database for the process: the API's sessions and the consumer's."""
    return create_engine(url)


def create_app(queue: vesper.App | None = None) -> Litestar:
    """The order service, its orders in `queue`'s database (default: `jobs`)."""
    queue = queue or jobs
    engine = engine_of(database_url(queue))
    Base.metadata.create_all(engine)

    @post("/orders", sync_to_thread=True)
    def create_order(data: JSONBody[NewOrder]) -> dict[str, Any]:
        with Session(engine, expire_on_commit=False) as session:
            try:
                order = place_order(session, data, queue)
            except PaymentDeclined as exc:
                raise HTTPException(status_code=402, detail=str(exc)) from None
        return {"order_id": order.id, "item": order.item, "quantity": order.quantity}

    return Litestar(route_handlers=[create_order])


def register(queue: vesper.App) -> vesper.App:
    """Add the order service's consumers to `queue`."""

    @queue.consumer("send_order_email")
    def send_order_email(job: vesper.Job) -> None:
        order_id = job.payload["order_id"]
        log.info("emailed %s about order %s", job.payload["to"], order_id)  # stands in for SMTP
        with Session(engine_of(database_url(queue))) as session, session.begin():
            session.execute(
                update(Order).where(Order.id == order_id).values(emailed_at=datetime.now(UTC))
            )

    return queue


jobs = register(vesper.App())  # the consumers, and the producers' connection to the queue
