package io.zsc.verifier;

/**
 * What the Verifier is doing, for health checks and dashboards: the Rust {@code VerifierStats}.
 *
 * @param appliedSequence the last revocation-log sequence applied (null before the first
 *     checkpoint)
 * @param fresh whether the cache may answer now (the freshness rule)
 * @param flushes times the whole cache was flushed because the server's log could not serve the
 *     cursor (OUT_OF_RANGE)
 */
public record Stats(
    long hits,
    long misses,
    int cachedKeys,
    Long appliedSequence,
    String storeId,
    boolean connected,
    boolean fresh,
    long flushes) {

  /** One line of JSON, the line protocol's {@code stats} answer. */
  public String toJson() {
    return "{\"hits\":" + hits + ",\"misses\":" + misses + ",\"cached_keys\":" + cachedKeys
        + ",\"applied_sequence\":" + appliedSequence + ",\"store_id\":" + quote(storeId)
        + ",\"connected\":" + connected + ",\"fresh\":" + fresh + ",\"flushes\":" + flushes + "}";
  }

  static String quote(String s) {
    if (s == null) {
      return "null";
    }
    StringBuilder out = new StringBuilder("\"");
    for (char c : s.toCharArray()) {
      switch (c) {
        case '"' -> out.append("\\\"");
        case '\\' -> out.append("\\\\");
        default -> {
          if (c < 0x20) {
            out.append(String.format("\\u%04x", (int) c));
          } else {
            out.append(c);
          }
        }
      }
    }
    return out.append('"').toString();
  }
}
