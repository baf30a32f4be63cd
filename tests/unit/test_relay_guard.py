"""The relay guard's decisions (digest.relay_guard): when a run's refusals say the relay refuses mail."""

from __future__ import annotations

from digest.relay_guard import GuardState, RelayGuard

RELAY = "recipient refused: 550 relay not permitted"


def test_a_relay_refusing_everybody_trips_at_the_eleventh_refusal_and_holds_them_all() -> None:
    guard: RelayGuard[int] = RelayGuard()
    held = [guard.attempt(True, RELAY, k) for k in range(11)]
    assert all(held) and guard.tripped
    assert guard.still_held() == list(range(11)) and guard.released() == []
    assert guard.attempt(True, RELAY, 11)  # a straggler in flight stays pending too
    assert not guard.attempt(False, "", 12)
    assert guard.still_held() == list(range(12))
    assert "550 relay not permitted" in guard.describe() and "11 of the first 11" in guard.describe()


def test_a_few_refusals_in_the_first_fifty_are_recorded_once_the_window_is_full() -> None:
    guard: RelayGuard[int] = RelayGuard()
    for k in range(50):
        refused = k % 5 == 0  # 10 of 50: a fifth, not more
        assert guard.attempt(refused, "recipient refused: 550 5.1.1 no such user", k) is (refused and k < 50)
        if k < 49:
            assert guard.state is GuardState.WATCHING and guard.released() == []
    assert guard.state is GuardState.HEALTHY
    assert guard.released() == list(range(0, 50, 5)) and guard.released() == []
    assert not guard.attempt(True, RELAY, 99)  # after the window: recorded at once
    assert guard.still_held() == []


def test_a_short_run_is_judged_on_what_it_saw() -> None:
    one_of_three: RelayGuard[str] = RelayGuard()
    for refused, who in ((False, "ada"), (True, "grace"), (False, "alan")):
        one_of_three.attempt(refused, "recipient refused: 550 5.1.1 no such user", who)
    assert one_of_three.finish() is GuardState.HEALTHY and one_of_three.released() == ["grace"]

    two_of_three: RelayGuard[str] = RelayGuard()
    for refused, who in ((True, "ada"), (True, "grace"), (False, "alan")):
        two_of_three.attempt(refused, RELAY, who)
    assert two_of_three.finish() is GuardState.TRIPPED and two_of_three.still_held() == ["ada", "grace"]

    two_of_twenty: RelayGuard[int] = RelayGuard()
    for k in range(20):
        two_of_twenty.attempt(k in (3, 9), RELAY, k)
    assert two_of_twenty.finish() is GuardState.HEALTHY and two_of_twenty.released() == [3, 9]
