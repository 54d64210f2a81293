import itertools

import pytest

from appliance.model.orders import (
    TERMINAL,
    TRANSITIONS,
    IllegalTransition,
    IntentOrder,
    OrderState,
    transition,
    walk,
)

S = OrderState


def test_full_lifecycle_is_legal():
    state = S.NEW
    for step in (S.SUBMITTED, S.ACCEPTED, S.PARTIALLY_FILLED, S.PARTIALLY_FILLED, S.FILLED):
        state = transition(state, step, "o1")
    assert state is S.FILLED


@pytest.mark.parametrize("current,new", list(itertools.product(S, S)))
def test_transition_matches_table(current, new):
    if new in TRANSITIONS[current]:
        assert transition(current, new) is new
    else:
        with pytest.raises(IllegalTransition):
            transition(current, new)


def test_terminal_states_have_no_exit():
    assert {S.FILLED, S.CANCELED, S.REJECTED, S.DONE} == TERMINAL
    for t in TERMINAL:
        assert not TRANSITIONS[t]


def test_only_a_new_order_can_be_done():
    # DONE is a CANCEL intent carried out: straight from NEW, never after the venue saw it
    assert [s for s in S if S.DONE in TRANSITIONS[s]] == [S.NEW]


def test_message_names_order_and_states():
    with pytest.raises(
        IllegalTransition, match=r"order 7-0-3: illegal transition FILLED -> CANCELED"
    ):
        transition(S.FILLED, S.CANCELED, "7-0-3")


@pytest.mark.parametrize(
    "current,new",
    [(S.NEW, S.FILLED), (S.NEW, S.PARTIALLY_FILLED), (S.ACCEPTED, S.REJECTED), (S.REJECTED, S.NEW)],
)
def test_jumps_that_skip_steps_are_illegal(current, new):
    with pytest.raises(IllegalTransition):
        transition(current, new)


def test_walk_stops_at_first_bad_step():
    with pytest.raises(IllegalTransition) as err:
        walk(S.NEW, [S.SUBMITTED, S.FILLED, S.CANCELED], "x")
    assert err.value.current is S.FILLED and err.value.new is S.CANCELED


def test_advance_records_steps_and_keeps_state_on_error():
    o = IntentOrder("c1")
    o.advance(S.SUBMITTED)
    o.advance(S.REJECTED)
    assert o.steps == [S.SUBMITTED, S.REJECTED] and o.is_terminal
    with pytest.raises(IllegalTransition):
        o.advance(S.ACCEPTED)
    assert o.state is S.REJECTED and len(o.steps) == 2
    o.mark_persisted()
    assert o.persisted is S.REJECTED and o.steps == []


def test_quantities_are_lots():
    o = IntentOrder("c", qty_lots=3, lot=0.1, filled_lots=1, notional=0.1 * 50.0)
    assert o.qty == pytest.approx(0.3) and o.remaining_lots == 2
    assert o.avg_price == pytest.approx(50.0)
