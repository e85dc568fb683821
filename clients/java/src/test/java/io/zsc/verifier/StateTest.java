package io.zsc.verifier;

/** The read/invalidate and freshness rules (the Rust state.rs tests, one for one). */
final class StateTest {
  private StateTest() {}

  static final long MS = 1_000_000L;
  static final long SECOND = 1000 * MS;
  /** A wall-clock reading, fixed so the tests do not depend on the machine's clock. */
  static final long WALL = 1_800_000_000L * SECOND;

  static Entry entry(String keyId) {
    return CacheTest.entry(keyId);
  }

  static KeyHash h(int i) {
    return CacheTest.hash(i);
  }

  /** 2 s of staleness, 500 ms of clock skew, 4 keys, 3 revocations remembered. */
  static State newState() {
    return new State(4, 3, 2 * SECOND, 500 * MS);
  }

  static State.Checkpoint current(long sequence, String storeId, long serverTime) {
    return new State.Checkpoint(sequence, storeId, sequence, serverTime);
  }

  /** A checkpoint from a server whose clock reads the same as ours, arriving at once. */
  static State.Grant checkpoint(State state, long sequence, String storeId) {
    return state.checkpoint(current(sequence, storeId, WALL), System.nanoTime(), WALL);
  }

  static State state() {
    State state = newState();
    checkpoint(state, 10, "st_a");
    return state;
  }

  static State.Grant until(long deadline) {
    return new State.Grant(State.GrantKind.UNTIL, deadline);
  }

  static void nothingIsCachedBeforeTheFirstCheckpoint() {
    State state = newState();
    Check.isTrue(!state.admit(h(1), entry("zk_1"), 100, "st_a"), "no checkpoint yet");
    checkpoint(state, 10, "st_a");
    Check.isTrue(state.admit(h(1), entry("zk_1"), 10, "st_a"), "after it");
  }

  static void aSuccessReadBeforeAnAppliedRevocationIsNotCached() {
    State state = state();
    // The revocation (seq 12) is applied while a validation read at 11 is in flight.
    Check.equal(null, state.revoke(12, "zk_1"), "nothing cached to evict");
    Check.isTrue(!state.admit(h(1), entry("zk_1"), 11, "st_a"), "the stale read is refused");
    Check.equal(null, state.cache().get(h(1)), "not cached");
  }

  static void aSuccessReadBeforeTheSubscriptionPointIsNotCached() {
    Check.isTrue(!state().admit(h(1), entry("zk_1"), 9, "st_a"), "read before the stream");
  }

  static void aRevocationEvictsTheCachedKey() {
    State state = state();
    Check.isTrue(state.admit(h(1), entry("zk_1"), 10, "st_a"), "admitted 1");
    Check.isTrue(state.admit(h(2), entry("zk_2"), 10, "st_a"), "admitted 2");
    Check.equal(entry("zk_1"), state.revoke(11, "zk_1"), "evicted by key_id");
    Check.equal(null, state.cache().get(h(1)), "gone");
    Check.isTrue(state.cache().get(h(2)) != null, "the other stays");
    Check.equal(11L, state.applied, "applied");
  }

  static void forgettingOldRevocationsRaisesTheTrustFloor() {
    State state = state();
    for (long seq = 11; seq <= 14; seq++) {
      state.revoke(seq, "zk_" + seq);
    }
    // zk_11 was forgotten (capacity 3): a success read before 11 cannot be checked.
    Check.equal(11L, state.trustedFrom, "trusted_from");
    Check.isTrue(!state.admit(h(1), entry("zk_x"), 10, "st_a"), "below the floor");
    Check.isTrue(state.admit(h(1), entry("zk_x"), 14, "st_a"), "above it");
  }

  static void anAnswerFromAnotherStoreIsNotCached() {
    State state = state();
    Check.isTrue(!state.admit(h(1), entry("zk_1"), 10, "st_b"), "another store");
    Check.isTrue(!state.admit(h(1), entry("zk_1"), 10, ""), "no store");
    Check.equal(null, state.cache().get(h(1)), "not cached");
    Check.isTrue(state.admit(h(1), entry("zk_1"), 10, "st_a"), "ours");
  }

  static void aDifferentStoreFlushesEverything() {
    State state = state();
    Check.isTrue(state.admit(h(1), entry("zk_1"), 10, "st_a"), "admitted");
    checkpoint(state, 3, "st_b");
    Check.equal(null, state.cache().get(h(1)), "flushed");
    Check.equal(3L, state.applied, "applied");
    Check.equal(3L, state.trustedFrom, "trusted_from");
  }

  static void theCacheIsBounded() {
    State state = state();
    for (int i = 0; i < 10; i++) {
      state.admit(h(i), entry("zk_" + i), 10, "st_a");
    }
    Check.equal(4, state.size(), "bounded");
    // Evicting also forgets the key_id index, so a late revocation is harmless.
    Check.equal(null, state.revoke(11, "zk_0"), "already evicted");
  }

  static void aCurrentCheckpointKeepsTheCacheFreshForMaxStalenessLessTheSkew() {
    State state = newState();
    long arrival = System.nanoTime();
    Check.isTrue(!state.fresh(arrival), "not before the first checkpoint");
    Check.equal(until(arrival + 1500 * MS), state.checkpoint(current(0, "st_a", WALL), arrival, WALL), "grant");
    Check.isTrue(state.fresh(arrival + 1499 * MS), "fresh just before");
    Check.isTrue(!state.fresh(arrival + 1500 * MS), "not at the deadline");
    long next = arrival + SECOND;
    state.checkpoint(current(0, "st_a", WALL + SECOND), next, WALL + SECOND);
    Check.isTrue(state.fresh(next + 1499 * MS), "renewed");
    Check.isTrue(!state.fresh(next + 1500 * MS), "renewed deadline");
  }

  static void newsThatWasOldOnArrivalCountsAsOld() {
    State state = newState();
    long arrival = System.nanoTime();
    // Stamped 1 s before it arrived: 2 - 0.5 - 1 s are left.
    Check.equal(until(arrival + 500 * MS),
        state.checkpoint(current(0, "st_a", WALL - SECOND), arrival, WALL), "late");
    Check.isTrue(!state.fresh(arrival + 500 * MS), "ends early");
    // 1.5 s old or more on arrival: nothing is left.
    Check.equal(new State.Grant(State.GrantKind.TOO_OLD, 2 * SECOND),
        state.checkpoint(current(0, "st_a", WALL - 1500 * MS), arrival, WALL), "too old");
  }

  static void aProxyReplayingABufferedStreamCannotKeepTheCacheFresh() {
    State state = newState();
    long start = System.nanoTime();
    state.checkpoint(current(0, "st_a", WALL), start, WALL);
    // Checkpoints (one a second by the server's clock) delivered ten seconds late, one every
    // 100 ms, for a minute.
    for (int i = 0; i < 600; i++) {
      long late = start + 10 * SECOND + i * 100 * MS;
      long stamped = WALL + (i / 10) * SECOND;
      State.Grant grant = state.checkpoint(current(0, "st_a", stamped), late, WALL + (late - start));
      Check.equal(State.GrantKind.TOO_OLD, grant.kind(), "replayed " + i);
      Check.isTrue(!state.fresh(late), "stale at " + i);
    }
  }

  static void aCheckpointBehindTheDurableHeadGrantsNothing() {
    State state = newState();
    long arrival = System.nanoTime();
    var behind = new State.Checkpoint(10, "st_a", 12, WALL);
    Check.equal(State.GrantKind.BEHIND, state.checkpoint(behind, arrival, WALL).kind(), "behind");
    Check.isTrue(!state.fresh(arrival), "not fresh");
    Check.equal(10L, state.applied, "what it says about the log still counts");
  }

  static void aCheckpointWithoutServerTimeGrantsNothing() {
    State state = newState();
    long arrival = System.nanoTime();
    var untimed = new State.Checkpoint(0, "st_a", 0, null);
    Check.equal(State.GrantKind.NO_SERVER_TIME, state.checkpoint(untimed, arrival, WALL).kind(), "untimed");
    Check.isTrue(!state.fresh(arrival), "not fresh");
  }

  static void aServerClockAheadWithinTheBoundIsAllowedForBeyondItGrantsNothing() {
    State state = newState();
    long arrival = System.nanoTime();
    // 300 ms ahead: its news can be at most 200 ms old, so 1.8 s are left.
    Check.equal(until(arrival + 1800 * MS),
        state.checkpoint(current(0, "st_a", WALL + 300 * MS), arrival, WALL), "within");
    State other = newState();
    Check.equal(new State.Grant(State.GrantKind.CLOCK_AHEAD, 600 * MS),
        other.checkpoint(current(0, "st_a", WALL + 600 * MS), arrival, WALL), "beyond");
    Check.isTrue(!other.fresh(arrival), "not fresh");
  }

  static void aLateOldCheckpointDoesNotShortenWhatANewerOneGranted() {
    State state = newState();
    long arrival = System.nanoTime();
    state.checkpoint(current(0, "st_a", WALL), arrival, WALL);
    state.checkpoint(current(0, "st_a", WALL - SECOND), arrival + 100 * MS, WALL + 100 * MS);
    Check.isTrue(state.fresh(arrival + 1499 * MS), "kept");
  }

  static void aDisconnectOrAFlushEndsFreshnessAtOnce() {
    State state = state();
    Check.isTrue(state.fresh(System.nanoTime()), "fresh");
    state.disconnected();
    Check.isTrue(!state.fresh(System.nanoTime()), "disconnected");
    checkpoint(state, 10, "st_a");
    Check.isTrue(state.fresh(System.nanoTime()), "again");
    state.flush();
    Check.isTrue(!state.fresh(System.nanoTime()), "flushed");
  }
}
