"""A/B records: the newest valid copy wins, damage falls back or to defaults, writes are bounded."""

from firmware import persistence as p


class _Store:
    """Board storage in a dict; `fail` makes writes raise like a full or broken flash."""

    def __init__(self):
        self.files = {}
        self.fail = False
        self.writes = []

    def storage_read(self, name):
        return self.files.get(name)

    def storage_write(self, name, data):
        if self.fail:
            raise OSError(28)
        self.files[name] = bytes(data)
        self.writes.append(name)


class _State:
    """A client with 6 bytes of state; rejects content whose first byte is 0xFF."""

    state_size = 6

    def __init__(self, value=b"\x00" * 6):
        self.value = bytearray(value)

    def save_state(self, buf):
        buf[:] = self.value

    def restore_state(self, buf):
        if buf[0] == 0xFF:
            return False
        self.value[:] = buf
        return True


def _saved(store, value, writes=1):
    per = p.Persistence(store)
    c = per.register("est", _State(value), 1000)
    for _ in range(writes):
        per.flush(0)
        c.obj.value[5] += 1
    return per


def _restored(store):
    per = p.Persistence(store)
    obj = _State()
    per.register("est", obj, 1000)
    per.restore()
    return per, obj


def test_round_trip_and_alternating_slots():
    store = _Store()
    _saved(store, b"abcdef", writes=3)
    assert store.writes == ["est.a", "est.b", "est.a"]
    per, obj = _restored(store)
    assert bytes(obj.value) == b"abcdeh"  # the third write: f + 2
    assert per.status == p.OK


def test_empty_storage_keeps_defaults():
    per, obj = _restored(_Store())
    assert per.status == p.EMPTY and bytes(obj.value) == b"\x00" * 6


def test_damaged_newest_copy_falls_back_to_the_older():
    store = _Store()
    _saved(store, b"abcdef", writes=2)  # a: ...f (seq 1), b: ...g (seq 2)
    damaged = bytearray(store.files["est.b"])
    damaged[9] ^= 0x01  # one bit of the payload: a write cut short, or flash decay
    store.files["est.b"] = bytes(damaged)
    per, obj = _restored(store)
    assert per.status == p.FALLBACK and bytes(obj.value) == b"abcdef"
    # The next write replaces the damaged copy, not the good one.
    store.writes = []
    obj.value[0] = ord("z")
    per.flush(0)
    assert store.writes == ["est.b"]


def test_truncated_record_is_not_used():
    store = _Store()
    _saved(store, b"abcdef", writes=2)
    store.files["est.b"] = store.files["est.b"][:-3]
    per, obj = _restored(store)
    assert per.status == p.FALLBACK and bytes(obj.value) == b"abcdef"


def test_both_copies_damaged_is_corrupt_with_defaults():
    store = _Store()
    _saved(store, b"abcdef", writes=2)
    store.files["est.a"] = b"CG" + b"\x00" * 16
    store.files["est.b"] = b"garbage"
    per, obj = _restored(store)
    assert per.status == p.CORRUPT and bytes(obj.value) == b"\x00" * 6


def test_client_rejecting_the_content_is_corrupt():
    store = _Store()
    _saved(store, b"\xffbcdef")
    per, obj = _restored(store)
    assert per.status == p.CORRUPT and bytes(obj.value) == b"\x00" * 6


def test_layout_change_is_not_restored():
    # A firmware update that changes a client's state_size must not read the old layout.
    store = _Store()
    _saved(store, b"abcdef")
    per = p.Persistence(store)
    obj = _State()
    obj.state_size = 7
    per.register("est", obj, 1000)
    per.restore()
    assert per.status == p.CORRUPT


def test_unchanged_state_is_not_rewritten_and_interval_bounds_writes():
    store = _Store()
    per = p.Persistence(store)
    obj = _State(b"abcdef")
    per.register("est", obj, 1000)
    for t in range(0, 10000, 100):  # 10 s of cycles, state changing every cycle
        obj.value[0] = t // 100
        per.service(t)
    assert len(store.writes) == 9  # at most one write per interval (the first starts the clock)
    per.flush(10000)  # the latest state, now
    assert len(store.writes) == 10
    for t in range(10100, 20000, 100):  # unchanged state: no writes at all
        per.service(t)
    per.flush(20000)
    assert len(store.writes) == 10


def test_write_failure_is_reported_and_retried():
    store = _Store()
    per = p.Persistence(store)
    obj = _State(b"abcdef")
    per.register("est", obj, 1000)
    store.fail = True
    per.flush(0)
    assert per.status == p.WRITE_FAILED
    store.fail = False
    per.flush(100)
    assert per.status == p.EMPTY and store.writes == ["est.a"]
