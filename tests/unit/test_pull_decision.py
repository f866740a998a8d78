"""The replica's pull decision is pure: from its free slots, the engine's headroom, the slots reserved for
interactive requests and the tenants running here, which request it may lease next."""

from ossfleet.replica.worker import Pull, next_pull


def test_a_free_slot_pulls_any_band_only_while_more_slots_are_free_than_reserved():
    assert next_pull(free_slots=3, headroom=0, reserved_slots=2, running_tenants=["a"]) == Pull(batch_band=True)
    assert next_pull(free_slots=2, headroom=0, reserved_slots=2, running_tenants=[]) == Pull(batch_band=False)
    assert next_pull(free_slots=1, headroom=5, reserved_slots=0, running_tenants=["a"]) == Pull(batch_band=True)


def test_full_with_headroom_pulls_only_a_tenant_with_nothing_running_here():
    p = next_pull(free_slots=0, headroom=2, reserved_slots=0, running_tenants=["b", "a", "b"])
    assert p == Pull(batch_band=False, exclude_tenants=("a", "b"), affinity=False)


def test_full_without_headroom_pulls_nothing():
    assert next_pull(free_slots=0, headroom=0, reserved_slots=0, running_tenants=["a"]) is None
    assert next_pull(free_slots=-1, headroom=0, reserved_slots=0, running_tenants=[]) is None
