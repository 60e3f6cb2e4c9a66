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
        if name != "records":  # the marker (written once): not a record write
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


def test_erased_slots_after_records_were_written_are_erased_not_a_first_start():
    # The first write leaves the marker; a later start without either slot is ERASED (the
    # application's StorageFault), a start on storage that never held a record is EMPTY.
    store = _Store()
    per, _ = _restored(store)
    assert per.status == p.EMPTY
    _saved(store, b"abcdef", writes=3)
    assert store.files["records"] == b"1"
    del store.files["est.a"], store.files["est.b"]
    per, obj = _restored(store)
    assert per.status == p.ERASED and obj.value == bytearray(6)
    store.files["records"] = b"\xff garbage"  # damaged marker: still there, still counts
    per, _ = _restored(store)
    assert per.status == p.ERASED


def test_a_record_says_whether_it_was_written_at_shutdown():
    # flush() writes shutdown records ("CS"), the periodic policy plain ones ("CG"); a flush of
    # an unchanged state whose last record was periodic writes it again as a shutdown record.
    store = _Store()
    per = p.Persistence(store)
    obj = _State(b"abcdef")
    c = per.register("est", obj, 1000)
    per.service(0)
    obj.value[0] = 1
    per.service(1000)
    assert store.writes == ["est.a"]
    per2, _ = _restored(store)
    assert per2.client_status("est") == p.OK and not per2._clients[0].clean
    per.flush(1100)  # unchanged, but not yet a shutdown record
    assert store.writes == ["est.a", "est.b"]
    per.flush(1200)  # now it is one: nothing to write
    assert store.writes == ["est.a", "est.b"]
    per3, _ = _restored(store)
    assert per3._clients[0].clean
    assert c.written_clean


def test_a_client_marked_due_is_written_after_dirty_ms_not_its_interval():
    store = _Store()
    per = p.Persistence(store, dirty_ms=500)
    obj = _State(b"abcdef")
    c = per.register("est", obj, 60000)
    per.service(0)
    obj.value[0] = 1
    per.service(400)
    assert not store.writes  # neither due nor its interval passed
    c.due = True
    per.service(450)
    assert not store.writes  # due, but dirty_ms since the last write has not passed
    per.service(500)
    assert store.writes == ["est.a"] and not c.due
