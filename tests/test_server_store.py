"""The store's contract (server/storage.py `StoreQueries`), run on SQLite and on PostgreSQL
(server/storage_pg.py, on the session's throwaway server): the same statements must give the
same answers, roll back together, and keep one writer at a time across threads and stores."""

from __future__ import annotations

import sqlite3
import threading

import psycopg
import pytest

from server.pace import SharedRateLimiter
from server.storage import open_store

DUPLICATE = (sqlite3.IntegrityError, psycopg.errors.UniqueViolation)


@pytest.fixture
def store(tmp_path, database):
    s = open_store(database, str(tmp_path), fsync=False)
    yield s
    s.close()


def test_devices_tokens_and_nonces(store):
    with store.write() as c:
        assert store.add_device(c, "d1", "t1", 10.0, token_expires=100.0) is True
        assert store.add_device(c, "d1", "t2", 20.0, public_key="ab", attested=True) is False  # new token, old revoked
        assert store.add_device(c, "d2", "t3", 30.0, attestation_id="phone-1", token_expires=50.0) is True
        assert store.spend_nonce(c, "n1", 40.0, 30.0) is True
        assert store.spend_nonce(c, "n1", 40.0, 30.0) is False  # a replay
        assert store.spend_nonce(c, "n1", 90.0, 41.0) is True  # expired and purged: free again
        assert store.devices_with_attestation(c, "phone-1", "d9") == 1
        assert store.devices_with_attestation(c, "phone-1", "d2") == 0
    assert store.device_for_token("t1") is None and store.device_for_token("t2") == "d1"
    assert store.device_for_token("t3", now=49.0) == "d2" and store.device_for_token("t3", now=50.0) is None
    d1 = store.get_device("d1")
    assert (d1.registered_at, d1.public_key, d1.attested) == (10.0, "ab", True)  # registration time kept
    assert store.count_devices() == 2 and store.count_devices(attested_only=True) == 1
    assert store.secret("k", lambda: b"\x00\xffone") == b"\x00\xffone"
    assert store.secret("k", lambda: b"two") == b"\x00\xffone"  # made once


def test_round_updates_checkpoints_and_models(store):
    third = 1.0 / 3.0  # a float64 that a 4-byte REAL would round
    with store.write() as c:
        store.insert_round(c, 0, 0, 3, 4, 2, third, 5.0)
        store.select_device(c, 0, "a", 6.0, 16.0)
        store.select_device(c, 0, "b", 7.0, 17.0)  # the deadline is the first selection's
        seqs = [store.insert_update(c, 0, d, f"u{d}", 2 + i, 2.0 + i + third, None, 0.5, f"s{d}", 8.0 + i, i == 2)
                for i, d in enumerate("abc")]
    assert seqs == [seqs[0], seqs[0] + 1, seqs[0] + 2]
    rnd = store.open_round()
    assert (rnd.round, rnd.noise_std, rnd.deadline, rnd.selected, rnd.reports) == (0, third, 16.0, 2, 3)
    assert store.is_selected(0, "b") and not store.is_selected(0, "c")
    up = store.get_update(0, "c")
    assert (up.seq, up.weight, up.round_complete, up.spool) == (seqs[2], 4.0 + third, 1, "sc")
    with store.write() as c:
        assert [u.device_id for u in store.updates_between(c, 0, seqs[0], seqs[1])] == ["b"]
        assert store.last_seq(c, 0) == seqs[2]
        assert store.round_weights(c, 0) == [2.0 + third, 3.0 + third, 4.0 + third]
        store.set_checkpoint(c, 0, seqs[1], "sums/r0", 5.0, 2)
        store.clear_spools(c, 0, 0, seqs[1])
        with pytest.raises(DUPLICATE):  # one update per device and round
            with _savepoint(c):
                store.insert_update(c, 0, "a", "again", 1, 1.0, None, 0.1, None, 9.0, False)
    assert store.spool_owner("sa") is None and store.spool_owner("sc") == (0, seqs[2])
    assert store.referenced_spools(["sa", "sc", "sx", "sc"]) == {"sc"}
    assert store.referenced_spools([f"s{i}" for i in range(600)] + ["sc"]) == {"sc"}  # past one statement's 512
    rnd, selected, up = store.upload_state(0, "c")  # one statement: the round, the selection, the update
    assert (rnd, selected, up) == (store.get_round(0), False, store.get_update(0, "c"))
    assert store.upload_state(0, "b")[1:] == (True, store.get_update(0, "b"))
    assert store.upload_state(0, "z")[1:] == (False, None) and store.upload_state(7, "a") == (None, False, None)
    assert (store.get_round(0).ckpt_seq, store.get_round(0).ckpt_count) == (seqs[1], 2)
    with store.write() as c:
        store.insert_model(c, 0, None, "v0.npz", "h0", 10, 1.0, 0.0, 0.0, {"source": "bundle"})
        store.insert_model(c, 1, 0, "v1.npz", "h1", 10, 2.0, 0.25, 1.5, {"round": 0})
        store.finish_round(c, 0, "closed", 20.0, 1, "goal")
        store.insert_round(c, 1, 1, 3, 4, 2, 0.0, 20.0)
        assert store.privacy_events(c) == [(0.25, 1.5)]
    assert store.latest_model().meta == {"round": 0} and store.get_model(0).sha256 == "h0"
    assert store.round_counts() == {"closed": 1, "open": 1} and store.last_round().round == 1


def _savepoint(c):
    """A nested transaction where the store has them (PostgreSQL aborts a whole transaction on an
    error; SQLite only the statement)."""
    raw = getattr(c, "raw", None)
    if raw is not None:
        return raw.transaction()
    import contextlib

    return contextlib.nullcontext()


def test_a_failed_write_changes_nothing(store):
    with pytest.raises(RuntimeError):
        with store.write() as c:
            store.insert_round(c, 0, 0, 3, 4, 2, 0.0, 5.0)
            raise RuntimeError("crash inside the transaction")
    assert store.last_round() is None
    with store.write() as c:  # and the store is usable afterwards
        store.insert_round(c, 0, 0, 3, 4, 2, 0.0, 5.0)
    assert store.open_round().round == 0


def test_a_swallowed_error_is_not_taken_for_a_commit(postgres):
    """PostgreSQL aborts the whole transaction on a failed statement and answers its COMMIT with
    ROLLBACK: a write() whose caller caught that error must raise, not return as committed."""
    store = open_store(postgres.create_database(), "", False)
    with pytest.raises(psycopg.errors.InFailedSqlTransaction):
        with store.write() as c:
            store.insert_round(c, 0, 0, 3, 4, 2, 0.0, 5.0)
            with pytest.raises(DUPLICATE):
                store.insert_round(c, 0, 0, 3, 4, 2, 0.0, 5.0)
    assert store.last_round() is None
    with store.write() as c:  # the connection is usable afterwards
        store.insert_round(c, 0, 0, 3, 4, 2, 0.0, 5.0)
    assert store.open_round().round == 0
    store.close()


def test_counters_sum_over_instances(store):
    with store.write() as c:
        store.save_counters(c, 1, {("req", "a"): 2.0, ("req", "b"): 1.0})
        store.save_counters(c, 1, {("req", "a"): 5.0})  # a snapshot replaces the instance's value
        store.save_counters(c, 2, {("req", "a"): 3.0})
    assert store.all_counters() == {("req", "a"): 8.0, ("req", "b"): 1.0}


def test_one_writer_at_a_time_across_threads_and_stores(tmp_path, database):
    """Read-then-write increments from 4 threads over 2 store objects (as 2 processes or hosts
    would hold) lose nothing only if `write()` excludes every other writer."""
    stores = [open_store(database, str(tmp_path), fsync=False) for _ in range(2)]
    with stores[0].write() as c:
        stores[0].insert_round(c, 0, 0, 3, 4, 2, 0.0, 5.0)

    def bump(s):
        for _ in range(25):
            with s.write() as c:
                n = s.get_round(0, c).selected
                c.execute("UPDATE rounds SET selected = ? WHERE round = 0", (n + 1,))
        s.close()

    threads = [threading.Thread(target=bump, args=(stores[i % 2],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert stores[0].get_round(0).selected == 100


def test_shared_rate_buckets_hand_computed(postgres):
    """Token buckets in PostgreSQL: rate 2/s, burst 3, on a given clock; two stores (two hosts)
    spend from the same bucket."""
    url = postgres.create_database()
    a, b = open_store(url, "", False), open_store(url, "", False)
    assert a.take_token("device", "d", 2.0, 3, now=100.0) == (True, 2.0)
    assert b.take_token("device", "d", 2.0, 3, now=100.0) == (True, 1.0)
    assert a.take_token("device", "d", 2.0, 3, now=100.0) == (True, 0.0)
    assert b.take_token("device", "d", 2.0, 3, now=100.25) == (False, 0.5)  # refilled 0.25 s * 2/s
    assert a.take_token("device", "d", 2.0, 3, now=100.5) == (True, 0.0)  # 0.5 + 0.5 = 1: spent
    assert a.take_token("device", "d", 2.0, 3, now=200.0) == (True, 2.0)  # full again, capped at burst
    assert a.take_token("register", "d", 2.0, 3, now=100.0) == (True, 2.0)  # scopes are separate
    lim_a, lim_b = SharedRateLimiter(a, "x", 0.001, 2), SharedRateLimiter(b, "x", 0.001, 2)
    assert lim_a.take("dev", 0.0) is None and lim_b.take("dev", 0.0) is None
    assert lim_a.take("dev", 0.0) == 1000  # the third request through either host: 1 token / 0.001 per s
    assert a.forget_full_buckets("x", 3600.0) == 0 and a.forget_full_buckets("device", -1e12) == 1
    a.close(), b.close()


def test_token_and_bucket_in_one_statement(postgres):
    """`take_token_for`: the device a token names and a token of its bucket, as `device_for_token`
    then `take_token` would give; an unknown, revoked or expired token names nobody and spends
    nothing (a flood of made-up tokens cannot drain a real device's bucket or grow the table)."""
    url = postgres.create_database()
    a, b = open_store(url, "", False), open_store(url, "", False)
    with a.write() as c:
        a.add_device(c, "d1", "t1", 10.0)
        a.add_device(c, "d1", "t2", 11.0)  # t1 revoked
        a.add_device(c, "d2", "t3", 12.0, token_expires=50.0)
    # the database's clock refills the bucket at 0.001 a second between statements: approx
    assert a.take_token_for("device", "t2", 20.0, 0.001, 2) == ("d1", True, pytest.approx(1.0, abs=0.01))
    assert b.take_token_for("device", "t2", 20.0, 0.001, 2) == ("d1", True, pytest.approx(0.0, abs=0.01))  # one bucket
    d, allowed, tokens = a.take_token_for("device", "t2", 20.0, 0.001, 2)
    assert (d, allowed) == ("d1", False) and tokens < 0.01
    for token, unix in (("t1", 20.0), ("nope", 20.0), ("t3", 50.0)):
        assert a.take_token_for("device", token, unix, 0.001, 2) == (None, False, 0.0)
    assert a.take_token_for("device", "t3", 49.0, 0.001, 2) == ("d2", True, 1.0)  # its first spend: burst - 1
    assert a.conn().execute("SELECT COUNT(*) FROM rate_buckets").fetchone()[0] == 2  # d1's and d2's only
    lim = SharedRateLimiter(b, "device", 0.001, 2)
    assert lim.take_for_token("t3", 49.0) == ("d2", None)
    assert lim.take_for_token("t3", 49.0) == ("d2", 1000)
    assert lim.take_for_token("t1", 49.0) == (None, None)
    a.close(), b.close()


def test_bad_database_url_is_a_clear_error(tmp_path):
    from server.settings import settings_from_dict
    from server.testing import config_dict, make_bundle

    make_bundle(str(tmp_path / "b"))
    with pytest.raises(ValueError, match="collector.database must be empty .* or a postgresql:// URL"):
        settings_from_dict(config_dict(str(tmp_path / "b"), str(tmp_path / "s"), collector={"database": "mysql://x"}))
    with pytest.raises(ValueError, match="sync rounds without secagg"):
        settings_from_dict(config_dict(str(tmp_path / "b"), str(tmp_path / "s"),
                                       collector={"database": "postgresql://u@h/db", "policy": "fedbuff"}))


def test_unreachable_database_names_it_without_password():
    from server.storage_pg import PostgresStore

    with pytest.raises(RuntimeError) as e:
        PostgresStore("postgresql://me:secret@127.0.0.1:1/db?connect_timeout=2")
    assert "me:***@127.0.0.1:1/db" in str(e.value) and "secret" not in str(e.value)
