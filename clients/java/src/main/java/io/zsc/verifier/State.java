package io.zsc.verifier;

import java.util.ArrayDeque;
import java.util.HashMap;
import java.util.Map;

/**
 * The Verifier's memory and its rules, free of I/O so each rule can be tested on its own: the
 * Rust Verifier's state.rs, rule for rule. Not thread-safe: the Verifier holds one lock around
 * every call, so admitting a ValidateKey answer and applying a revocation never interleave.
 *
 * <p>The read/invalidate rule: a ValidateKey success read at log head {@code h} may be cached
 * only if this Verifier will see every revocation after {@code h}. It sees everything after
 * {@code trustedFrom} (the head it subscribed at, or resumed from without a gap), so {@code h >=
 * trustedFrom} is required; a key_id it has already seen revoked is never cached again; and the
 * answer must come from the store it follows.
 *
 * <p>The freshness rule: the cache may answer only while the news it has applied is younger
 * than {@code maxStaleness}, judged by the server's clock, not by when a message arrived. A
 * checkpoint whose {@code sequence >= durable_head} proves that every revocation acknowledged by
 * its {@code server_time} has been applied. If the two clocks differ by at most {@code
 * maxClockSkew}, its age at arrival is at most {@code arrivalWall - serverTime + maxClockSkew};
 * from then on it ages on the monotonic clock. So the cache may answer until {@code arrival +
 * maxStaleness - maxClockSkew - (arrivalWall - serverTime)}. A checkpoint behind its durable
 * head, without a server time, or whose server time is ahead of ours by more than {@code
 * maxClockSkew} grants nothing; a disconnect withdraws what was granted.
 *
 * <p>Times: {@code arrival} and deadlines are {@link System#nanoTime} readings; wall-clock times
 * are nanoseconds since the Unix epoch; durations are nanoseconds.
 */
final class State {
  /** A checkpoint as the freshness rule reads it; {@code serverTime} null from an older server. */
  record Checkpoint(long sequence, String storeId, long durableHead, Long serverTime) {}

  /** What a checkpoint did to freshness. */
  enum GrantKind {
    /** The cache may answer until {@code Grant.nanos} (nanoTime), or a later deadline granted before. */
    UNTIL,
    /** The stream had not sent everything up to the durable head. */
    BEHIND,
    /** No server time: freshness cannot be judged, so the cache is not used. */
    NO_SERVER_TIME,
    /** The news was already too old when it arrived ({@code nanos}: its worst-case age). */
    TOO_OLD,
    /** The server's clock is ahead of ours by {@code nanos}, beyond max_clock_skew. */
    CLOCK_AHEAD
  }

  record Grant(GrantKind kind, long nanos) {}

  private final Cache cache;
  private final Map<String, KeyHash> byKeyId = new HashMap<>();
  /** Revoked key_ids this Verifier has applied, oldest first, bounded. */
  private final ArrayDeque<Map.Entry<Long, String>> revoked = new ArrayDeque<>();
  private final Map<String, Long> revokedIds = new HashMap<>();
  private final int revokedCapacity;
  private final long maxStaleness;
  private final long maxClockSkew;
  /**
   * Every revocation with a greater sequence has been or will be applied. Null until the
   * stream's first checkpoint, and again after a flush.
   */
  Long trustedFrom;
  /** The last sequence applied (event or checkpoint): where a resumed stream starts. */
  Long applied;
  String storeId;

  State(int capacity, int revokedCapacity, long maxStalenessNanos, long maxClockSkewNanos) {
    this.cache = new Cache(capacity);
    this.revokedCapacity = revokedCapacity;
    this.maxStaleness = maxStalenessNanos;
    this.maxClockSkew = maxClockSkewNanos;
  }

  /** The cache, as the hits read it (without this state's lock). */
  Cache cache() {
    return cache;
  }

  boolean fresh(long now) {
    return cache.fresh(now);
  }

  /** The stream is gone: nothing it said is renewed, so the cache stops answering at once. */
  void disconnected() {
    cache.unfresh();
  }

  int size() {
    return cache.size();
  }

  /**
   * Offers a success read at {@code sequence} of the store {@code storeId}; returns whether it
   * was cached. Sequences of another store say nothing about this one's revocations.
   */
  boolean admit(KeyHash hash, Entry entry, long sequence, String storeId) {
    boolean ours = this.storeId != null && this.storeId.equals(storeId);
    boolean trusted = ours && trustedFrom != null && sequence >= trustedFrom;
    if (!trusted || revokedIds.containsKey(entry.keyId())) {
      return false;
    }
    byKeyId.put(entry.keyId(), hash);
    Entry evicted = cache.insert(hash, entry);
    if (evicted != null && !hash.equals(byKeyId.get(evicted.keyId()))) {
      byKeyId.remove(evicted.keyId());
    }
    return true;
  }

  /** Applies a revocation; returns the entry it evicted, if the key was cached. */
  Entry revoke(long sequence, String keyId) {
    applied = sequence;
    revokedIds.put(keyId, sequence);
    revoked.addLast(Map.entry(sequence, keyId));
    while (revoked.size() > revokedCapacity) {
      Map.Entry<Long, String> oldest = revoked.pollFirst();
      revokedIds.remove(oldest.getValue());
      // Forgetting this revocation: a success read before it can no longer be checked.
      if (trustedFrom != null) {
        trustedFrom = Math.max(trustedFrom, oldest.getKey());
      }
    }
    KeyHash hash = byKeyId.remove(keyId);
    return hash == null ? null : cache.remove(hash);
  }

  /**
   * A checkpoint, arrived at {@code arrival} (nanoTime) when the local wall clock read {@code
   * arrivalWall}: everything up to its sequence of its store has been sent.
   */
  Grant checkpoint(Checkpoint checkpoint, long arrival, long arrivalWall) {
    if (storeId != null && !storeId.equals(checkpoint.storeId())) {
      flush();
    }
    storeId = checkpoint.storeId();
    if (trustedFrom == null) {
      trustedFrom = checkpoint.sequence();
    }
    applied = applied == null ? checkpoint.sequence() : Math.max(applied, checkpoint.sequence());
    Grant grant = grant(checkpoint, arrival, arrivalWall);
    if (grant.kind() == GrantKind.UNTIL) {
      cache.freshUntil(grant.nanos());
    }
    return grant;
  }

  /** Forgets everything: the server's log is not the one this state was built from. */
  void flush() {
    cache.unfresh();
    cache.clear();
    byKeyId.clear();
    revoked.clear();
    revokedIds.clear();
    trustedFrom = null;
    applied = null;
    storeId = null;
  }

  /** The freshness rule for one checkpoint (see the class docs). */
  private Grant grant(Checkpoint checkpoint, long arrival, long arrivalWall) {
    if (checkpoint.serverTime() == null) {
      return new Grant(GrantKind.NO_SERVER_TIME, 0);
    }
    if (checkpoint.sequence() < checkpoint.durableHead()) {
      return new Grant(GrantKind.BEHIND, 0);
    }
    // The most the news can have aged before it arrived, by the two clocks and the bound.
    long serverTime = checkpoint.serverTime();
    long worstAge;
    if (arrivalWall >= serverTime) {
      worstAge = arrivalWall - serverTime + maxClockSkew;
    } else {
      long ahead = serverTime - arrivalWall;
      if (ahead > maxClockSkew) {
        return new Grant(GrantKind.CLOCK_AHEAD, ahead);
      }
      worstAge = maxClockSkew - ahead;
    }
    long left = maxStaleness - worstAge;
    return left > 0
        ? new Grant(GrantKind.UNTIL, arrival + left)
        : new Grant(GrantKind.TOO_OLD, worstAge);
  }
}
