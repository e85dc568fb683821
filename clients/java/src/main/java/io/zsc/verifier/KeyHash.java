package io.zsc.verifier;

import java.lang.invoke.MethodHandles;
import java.lang.invoke.VarHandle;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.security.SecureRandom;

/**
 * A cache key: SipHash-2-4 with 128-bit output of the key's UTF-8 bytes, under a random key
 * drawn per process, so a hash identifies nothing outside this process and the key itself is
 * never kept.
 *
 * <p>Why SipHash and not HMAC-SHA256: it is a keyed pseudo-random function (the property the
 * cache needs: an attacker who cannot read this process's memory cannot make two keys collide),
 * its 128-bit output meets the ≥128-bit requirement, and over a ~50-byte key it costs tens of
 * nanoseconds where the JDK's HMAC-SHA256 costs ~0.6-1 µs (measured by bench.sh). The JDK has
 * no blake3 (the Rust Verifier's keyed hash).
 */
record KeyHash(long hi, long lo) {
  @Override
  public int hashCode() {
    // The bits are already pseudo-random: any 32 of them spread a hash table.
    return (int) lo;
  }

  /** The keyed hash function, one per Verifier. */
  static final class Hasher {
    private final long k0;
    private final long k1;

    Hasher(long k0, long k1) {
      this.k0 = k0;
      this.k1 = k1;
    }

    static Hasher random() {
      SecureRandom random = new SecureRandom();
      return new Hasher(random.nextLong(), random.nextLong());
    }

    /** The hash of the key's UTF-8 bytes. */
    KeyHash hash(String key) {
      return hash(key.getBytes(StandardCharsets.UTF_8));
    }

    /**
     * SipHash-2-4-128 (Aumasson and Bernstein, "SipHash: a fast short-input PRF"). Written out
     * with locals so the JIT keeps the state in registers; whole words are read with one
     * little-endian load each.
     */
    KeyHash hash(byte[] m) {
      int n = m.length;
      long v0 = k0 ^ 0x736f6d6570736575L;
      long v1 = k1 ^ 0x646f72616e646f6dL ^ 0xeeL;
      long v2 = k0 ^ 0x6c7967656e657261L;
      long v3 = k1 ^ 0x7465646279746573L;
      int end = n - (n % 8);
      for (int i = 0; i <= end; i += 8) {
        long w = i < end ? (long) WORD.get(m, i) : ((long) n << 56) | tail(m, end);
        v3 ^= w;
        for (int r = 0; r < 2; r++) {
          v0 += v1; v1 = Long.rotateLeft(v1, 13); v1 ^= v0; v0 = Long.rotateLeft(v0, 32);
          v2 += v3; v3 = Long.rotateLeft(v3, 16); v3 ^= v2;
          v0 += v3; v3 = Long.rotateLeft(v3, 21); v3 ^= v0;
          v2 += v1; v1 = Long.rotateLeft(v1, 17); v1 ^= v2; v2 = Long.rotateLeft(v2, 32);
        }
        v0 ^= w;
      }
      v2 ^= 0xeeL;
      for (int r = 0; r < 4; r++) {
        v0 += v1; v1 = Long.rotateLeft(v1, 13); v1 ^= v0; v0 = Long.rotateLeft(v0, 32);
        v2 += v3; v3 = Long.rotateLeft(v3, 16); v3 ^= v2;
        v0 += v3; v3 = Long.rotateLeft(v3, 21); v3 ^= v0;
        v2 += v1; v1 = Long.rotateLeft(v1, 17); v1 ^= v2; v2 = Long.rotateLeft(v2, 32);
      }
      long first = v0 ^ v1 ^ v2 ^ v3;
      v1 ^= 0xddL;
      for (int r = 0; r < 4; r++) {
        v0 += v1; v1 = Long.rotateLeft(v1, 13); v1 ^= v0; v0 = Long.rotateLeft(v0, 32);
        v2 += v3; v3 = Long.rotateLeft(v3, 16); v3 ^= v2;
        v0 += v3; v3 = Long.rotateLeft(v3, 21); v3 ^= v0;
        v2 += v1; v1 = Long.rotateLeft(v1, 17); v1 ^= v2; v2 = Long.rotateLeft(v2, 32);
      }
      return new KeyHash(v0 ^ v1 ^ v2 ^ v3, first);
    }

    /** The bytes after the last whole word, little-endian. */
    private static long tail(byte[] m, int from) {
      long w = 0;
      for (int i = m.length - 1; i >= from; i--) {
        w = (w << 8) | (m[i] & 0xffL);
      }
      return w;
    }

    private static final VarHandle WORD =
        MethodHandles.byteArrayViewVarHandle(long[].class, ByteOrder.LITTLE_ENDIAN);
  }
}
