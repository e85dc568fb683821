package io.zsc.verifier;

/** SipHash-2-4-128 against the reference vectors (key 00..0f, message 00..len-1). */
final class KeyHashTest {
  private KeyHashTest() {}

  private static final int[][] VECTORS = {
    // len 0, 1, 8, 15, 16 (vectors_sip128 of the SipHash reference implementation)
    {0xa3, 0x81, 0x7f, 0x04, 0xba, 0x25, 0xa8, 0xe6, 0x6d, 0xf6, 0x72, 0x14, 0xc7, 0x55, 0x02, 0x93},
    {0xda, 0x87, 0xc1, 0xd8, 0x6b, 0x99, 0xaf, 0x44, 0x34, 0x76, 0x59, 0x11, 0x9b, 0x22, 0xfc, 0x45},
    {0x3b, 0x62, 0xa9, 0xba, 0x62, 0x58, 0xf5, 0x61, 0x0f, 0x83, 0xe2, 0x64, 0xf3, 0x14, 0x97, 0xb4},
    {0x54, 0x93, 0xe9, 0x99, 0x33, 0xb0, 0xa8, 0x11, 0x7e, 0x08, 0xec, 0x0f, 0x97, 0xcf, 0xc3, 0xd9},
    {0x6e, 0xe2, 0xa4, 0xca, 0x67, 0xb0, 0x54, 0xbb, 0xfd, 0x33, 0x15, 0xbf, 0x85, 0x23, 0x05, 0x77},
  };
  private static final int[] LENGTHS = {0, 1, 8, 15, 16};

  static void sipHash128MatchesTheReferenceVectors() {
    KeyHash.Hasher hasher = new KeyHash.Hasher(0x0706050403020100L, 0x0f0e0d0c0b0a0908L);
    for (int v = 0; v < VECTORS.length; v++) {
      byte[] message = new byte[LENGTHS[v]];
      for (int i = 0; i < message.length; i++) {
        message[i] = (byte) i;
      }
      KeyHash hash = hasher.hash(message);
      Check.equal(word(VECTORS[v], 0), hash.lo(), "first half, length " + LENGTHS[v]);
      Check.equal(word(VECTORS[v], 8), hash.hi(), "second half, length " + LENGTHS[v]);
    }
  }

  static void differentProcessKeysGiveDifferentHashes() {
    String key = "zsc_example_key";
    Check.isTrue(!KeyHash.Hasher.random().hash(key).equals(KeyHash.Hasher.random().hash(key)),
        "a random per-process key");
  }

  private static long word(int[] bytes, int from) {
    long w = 0;
    for (int i = 7; i >= 0; i--) {
      w = (w << 8) | bytes[from + i];
    }
    return w;
  }
}
