"""The order service of examples/orders.py: 100 orders, every tenth declined at payment
after its order and email job were written, gives exactly 90 orders and 90 jobs, which a
worker then runs."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from litestar import Litestar
from litestar.testing import TestClient
from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from examples import orders
from vesper.domain.states import Status
from vesper.entrypoints.app import App
from vesper.entrypoints.service import build_runner


@pytest.fixture
def service(store_env: dict[str, str]) -> Iterator[tuple[TestClient[Litestar], App, Engine]]:
    app = orders.register(App(store_env))
    app.container.store()  # migrated
    engine = orders.engine_of(orders.database_url(app))
    try:
        with TestClient(orders.create_app(app)) as client:
            yield client, app, engine
    finally:
        app.close()
        orders.Base.metadata.drop_all(engine)
        engine.dispose()


def test_100_orders_with_every_tenth_declined_make_90_jobs_all_done(
    service: tuple[TestClient[Litestar], App, Engine],
) -> None:
    client, app, engine = service
    placed: list[int] = []
    for n in range(1, 101):
        card = "declined" if n % 10 == 0 else "ok"
        response = client.post(
            "/orders", json={"email": f"c{n}@example.com", "item": "book", "card": card}
        )
        if card == "declined":
            assert response.status_code == 402, response.text
        else:
            assert response.status_code == 201, response.text
            placed.append(response.json()["order_id"])
    assert len(placed) == 90
    with Session(engine) as session:
        stored = session.scalars(select(orders.Order.id)).all()
    assert sorted(stored) == sorted(placed)
    stats = app.container.get_stats()()
    assert stats.total == 90

    asyncio.run(asyncio.wait_for(build_runner(app).run(until_idle=True), 120))
    assert app.container.get_stats()().by_status.get(Status.DONE) == 90
    with Session(engine) as session:
        emailed = session.scalar(select(func.count()).where(orders.Order.emailed_at.is_not(None)))
    assert emailed == 90
