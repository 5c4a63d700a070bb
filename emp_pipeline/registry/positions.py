"""The positions aggregate: broker accounts (cash) and their net positions by symbol."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from emp_pipeline.domain.costs import DEFAULT_CAPITAL
from emp_pipeline.registry.errors import UnknownAccountError
from emp_pipeline.registry.input_checks import check_member
from emp_pipeline.registry.models import Account, BrokerKind, Position, utc_now
from emp_pipeline.registry.position_accounting import PositionState, apply_fill
from emp_pipeline.registry.records import AccountRecord, PositionRecord
from emp_pipeline.registry.statements import dialect_insert, record_from_row


def get_or_create_account(
    session: Session, *, broker: str, name: str, currency: str, initial_cash: float
) -> AccountRecord:
    """The account (broker, name), created with `initial_cash` if absent; concurrent callers get one row."""
    check_member("broker", broker, BrokerKind)
    row = {
        "broker": str(broker),
        "name": name,
        "currency": currency,
        "initial_cash": float(initial_cash),
        "cash": float(initial_cash),
        "created_at": utc_now(),
    }
    session.execute(
        dialect_insert(session, Account).on_conflict_do_nothing(index_elements=["broker", "name"]), [row]
    )
    account = session.scalars(select(Account).where(Account.broker == broker, Account.name == name)).one()
    return record_from_row(AccountRecord, account)


def get_or_create_paper_account(
    session: Session, name: str = "paper", currency: str = "USD", initial_cash: float = DEFAULT_CAPITAL
) -> AccountRecord:
    """The paper broker's account; an existing one keeps its cash (currency, initial cash not reset)."""
    return get_or_create_account(
        session, broker=BrokerKind.PAPER, name=name, currency=currency, initial_cash=initial_cash
    )


def get_account(session: Session, account_id: int) -> AccountRecord:
    row = session.get(Account, account_id)
    if row is None:
        raise UnknownAccountError(f"account {account_id} is not in the registry: create it first")
    return record_from_row(AccountRecord, row)


def apply_fill_to_position(
    session: Session, account_id: int, symbol: str, signed_quantity: float, price: float, fee: float
) -> None:
    blank = {
        "account_id": account_id,
        "symbol": symbol,
        "quantity": 0.0,
        "avg_price": 0.0,
        "realised_pnl": 0.0,
        "updated_at": utc_now(),
    }
    session.execute(
        dialect_insert(session, Position)
        .values(blank)
        .on_conflict_do_nothing(index_elements=["account_id", "symbol"])
    )
    position = session.scalars(
        select(Position)
        .where(Position.account_id == account_id, Position.symbol == symbol)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).one()
    state = apply_fill(
        PositionState(position.quantity, position.avg_price, position.realised_pnl),
        signed_quantity,
        price,
        fee,
    )
    position.quantity = state.quantity
    position.avg_price = state.avg_price
    position.realised_pnl = state.realised_pnl
    position.updated_at = utc_now()


def positions_for_account(
    session: Session, account_id: int, *, include_flat: bool = False
) -> list[PositionRecord]:
    """The account's net positions by symbol (flat ones only if asked: they still carry realised PnL)."""
    query = select(Position).where(Position.account_id == account_id)
    if not include_flat:
        query = query.where(Position.quantity != 0.0)
    return [record_from_row(PositionRecord, row) for row in session.scalars(query.order_by(Position.symbol))]
