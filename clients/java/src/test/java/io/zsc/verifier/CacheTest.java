package io.zsc.verifier;

/** The clock eviction and the freshness deadline (the Rust cache.rs tests). */
final class CacheTest {
  private CacheTest() {}

  static Entry entry(String keyId) {
    return new Entry("a@b.example", keyId, "org_1", "A");
  }

  static KeyHash hash(int i) {
    return new KeyHash(i, i);
  }

  static void aHitEntryGetsASecondChanceOverOneNeverHit() {
    Cache cache = new Cache(3);
    for (int i = 0; i < 3; i++) {
      Check.equal(null, cache.insert(hash(i), entry("zk_" + i)), "room for " + i);
    }
    // The oldest was hit; the next oldest was not: that one goes.
    Check.isTrue(cache.get(hash(0)) != null, "cached");
    Check.equal(entry("zk_1"), cache.insert(hash(3), entry("zk_3")), "evicted");
    Check.isTrue(cache.get(hash(0)) != null, "spared");
    Check.equal(3, cache.size(), "size");
  }

  static void whenEveryEntryIsReferencedOneIsStillEvicted() {
    Cache cache = new Cache(2);
    cache.insert(hash(0), entry("zk_0"));
    cache.insert(hash(1), entry("zk_1"));
    cache.get(hash(0));
    cache.get(hash(1));
    Check.equal(entry("zk_0"), cache.insert(hash(2), entry("zk_2")), "evicted");
    Check.equal(2, cache.size(), "size");
  }

  static void replacingAnEntryNeitherEvictsNorGrowsTheRing() {
    Cache cache = new Cache(2);
    cache.insert(hash(0), entry("zk_0"));
    cache.insert(hash(1), entry("zk_1"));
    Check.equal(null, cache.insert(hash(1), entry("zk_1")), "nothing evicted");
    Check.equal(2, cache.size(), "size");
    Check.equal(2, cache.ringSize(), "ring");
  }

  static void removedKeysDoNotGrowTheClockWithoutBound() {
    Cache cache = new Cache(1000);
    for (int round = 0; round < 10_000; round++) {
      cache.insert(hash(round + 100), entry("zk"));
      Check.isTrue(cache.remove(hash(round + 100)) != null, "removed");
      cache.insert(hash(7), entry("zk_7"));
      cache.remove(hash(7));
    }
    Check.equal(0, cache.size(), "empty");
    Check.isTrue(cache.ringSize() <= 16, "ring " + cache.ringSize());
  }

  static void freshnessIsADeadlineThatOnlyMovesLaterUntilWithdrawn() {
    Cache cache = new Cache(1);
    long now = System.nanoTime();
    long second = 1_000_000_000L;
    Check.isTrue(!cache.fresh(now), "not before a grant");
    cache.freshUntil(now + second);
    cache.freshUntil(now);
    Check.isTrue(cache.fresh(now), "the later deadline stands");
    Check.isTrue(!cache.fresh(now + second), "ends at the deadline");
    cache.unfresh();
    Check.isTrue(!cache.fresh(now), "withdrawn");
  }
}
