package io.zsc.verifier;

import java.util.ArrayDeque;
import java.util.HashSet;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;

/**
 * The Verifier's cache: answers keyed by the keyed hash of a key, read by every hit without a
 * lock, written by {@link State} alone (under the Verifier's lock, so its read/invalidate rule
 * decides every insert and removal). The same design as the Rust Verifier's cache.rs.
 *
 * <p>A hit writes nothing another thread's hit reads: {@link ConcurrentHashMap#get} takes no
 * lock, eviction is a clock (second chance) whose "referenced" bit a hit sets only when it is
 * clear, and the freshness deadline is one volatile long. An LRU would make every hit a write to
 * shared memory.
 *
 * <p>Linearizable per key: an entry removed by {@link #remove} (a revocation) is found by no
 * {@link #get} that starts after {@code remove} returned, and nothing else inserts it meanwhile
 * (the single writer checks the revoked set first).
 */
final class Cache {
  static final class Slot {
    final Entry entry;
    /** Hit since the clock hand last passed: spared once by eviction. Races are benign. */
    boolean referenced;

    Slot(Entry entry) {
      this.entry = entry;
    }
  }

  private final ConcurrentHashMap<KeyHash, Slot> map = new ConcurrentHashMap<>();
  private final int capacity;
  /** The clock: cached hashes, oldest admission first (writer only). */
  private final ArrayDeque<KeyHash> ring = new ArrayDeque<>();
  /** The origin of {@link #freshUntil}, on {@link System#nanoTime}'s clock. */
  private final long epoch = System.nanoTime();
  /**
   * The freshness deadline (see State): 0 for none, else 1 + its nanoseconds since {@link
   * #epoch} (a deadline before the epoch is kept as the epoch: never later than granted).
   */
  private volatile long freshUntil;

  Cache(int capacity) {
    if (capacity < 1) {
      throw new IllegalArgumentException("cache capacity must be at least 1");
    }
    this.capacity = capacity;
  }

  /** The entry for {@code hash}, if cached, marked recently used. */
  Entry get(KeyHash hash) {
    Slot slot = map.get(hash);
    if (slot == null) {
      return null;
    }
    // Only a write when the clock hand cleared it: a key hit from many threads stays in their
    // caches instead of bouncing between them.
    if (!slot.referenced) {
      slot.referenced = true;
    }
    return slot.entry;
  }

  /** Whether the cache may answer at {@code now} ({@link System#nanoTime}). */
  boolean fresh(long now) {
    long until = freshUntil;
    return until != 0 && now - epoch < until - 1;
  }

  int size() {
    return map.size();
  }

  // ---- The writer side: State only, under its lock. ----

  /**
   * Caches {@code entry} under {@code hash}, replacing the one there; when a new key finds the
   * cache full, evicts one first (the first the clock hand finds unreferenced) and returns it.
   */
  Entry insert(KeyHash hash, Entry entry) {
    if (map.containsKey(hash)) {
      map.put(hash, new Slot(entry));
      return null;
    }
    // Room first, and never by evicting the entry being admitted.
    Entry evicted = map.size() >= capacity ? evictOne() : null;
    map.put(hash, new Slot(entry));
    ring.addLast(hash);
    if (ring.size() > 2 * map.size() + 16) {
      compact();
    }
    return evicted;
  }

  /** Removes {@code hash}'s entry; once this returns, no hit finds it. */
  Entry remove(KeyHash hash) {
    Slot slot = map.remove(hash);
    return slot == null ? null : slot.entry;
  }

  void clear() {
    map.clear();
    ring.clear();
  }

  /** Extends the freshness deadline to {@code until} (nanoTime); never shortens it. */
  void freshUntil(long until) {
    long value = Math.max(until - epoch, 0) + 1;
    if (value > freshUntil) {
      freshUntil = value;
    }
  }

  /** The cache stops answering at once. */
  void unfresh() {
    freshUntil = 0;
  }

  int ringSize() {
    return ring.size();
  }

  /**
   * The clock hand: spares (and clears) a referenced entry once, evicts the first unreferenced
   * one. After two full turns it evicts regardless, so hits that keep setting bits cannot keep
   * the writer going round.
   */
  private Entry evictOne() {
    int turns = 2 * ring.size();
    KeyHash hash;
    while ((hash = ring.pollFirst()) != null) {
      Slot slot = map.get(hash);
      if (slot == null) {
        continue; // removed since (revoked): a stale hand position
      }
      if (turns > 0 && slot.referenced) {
        slot.referenced = false;
        turns--;
        ring.addLast(hash);
        continue;
      }
      Slot removed = map.remove(hash);
      return removed == null ? null : removed.entry;
    }
    return null;
  }

  /** Drops the ring's stale and repeated positions, keeping its order. */
  private void compact() {
    Set<KeyHash> seen = new HashSet<>();
    ring.removeIf(hash -> !map.containsKey(hash) || !seen.add(hash));
  }
}
