package io.zsc.verifier;

import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.Objects;
import java.util.function.Consumer;

/**
 * How a {@link Verifier} connects and how much it may trust its cache. Build with {@link
 * #builder}; the defaults are the Rust {@code VerifierConfig::new}'s.
 *
 * @param urls the zsc server first ({@code http://host:port} or {@code https://host:port}),
 *     then replicas of the same store: when the one in use fails, the stream resumes on the next
 *     from its cursor and validations go there too
 * @param token a consumer (or operator) service-account token, sent as {@code authorization:
 *     Bearer <token>}
 * @param tlsCa PEM of the CA to trust for {@code https://} URLs; null for the JDK's defaults
 * @param maxStaleness how old (by the server's clock) the applied revocations may be while the
 *     cache answers: the bound on how long a revoked key may still be accepted from the cache
 * @param maxClockSkew the most the server's clock and ours may differ; below maxStaleness
 * @param cacheCapacity keys cached at most
 * @param revokedCapacity revoked key_ids remembered for the read/invalidate check
 * @param backoffMin first reconnect delay (full jitter up to min * 2^failures, capped)
 * @param backoffMax reconnect delay cap
 * @param callTimeout deadline of each ValidateKey call (DEADLINE_EXCEEDED fails closed)
 * @param onRevocation called for each revocation applied (logs, metrics); may be null
 */
public record Config(
    List<String> urls,
    String token,
    Path tlsCa,
    Duration maxStaleness,
    Duration maxClockSkew,
    int cacheCapacity,
    int revokedCapacity,
    Duration backoffMin,
    Duration backoffMax,
    Duration callTimeout,
    Consumer<Revocation> onRevocation) {

  public Config {
    urls = List.copyOf(urls);
    if (urls.isEmpty()) {
      throw new IllegalArgumentException("at least one URL");
    }
    Objects.requireNonNull(token, "token");
    if (maxClockSkew.compareTo(maxStaleness) >= 0) {
      throw new IllegalArgumentException(
          "max_clock_skew (" + maxClockSkew + ") must be below max_staleness (" + maxStaleness
              + "), or the cache could never be used");
    }
  }

  /** A revocation the Verifier applied; {@code wasCached}: the key was dropped from the cache. */
  public record Revocation(
      long sequence, String keyId, String orgId, String ownerEmail, String reason, boolean wasCached) {}

  public static Builder builder(String url, String token) {
    return new Builder(url, token);
  }

  public static final class Builder {
    private final List<String> urls = new java.util.ArrayList<>();
    private final String token;
    private Path tlsCa;
    private Duration maxStaleness = Duration.ofSeconds(2);
    private Duration maxClockSkew = Duration.ofMillis(500);
    private int cacheCapacity = 100_000;
    private int revokedCapacity = 100_000;
    private Duration backoffMin = Duration.ofMillis(50);
    private Duration backoffMax = Duration.ofSeconds(2);
    private Duration callTimeout = Duration.ofSeconds(5);
    private Consumer<Revocation> onRevocation;

    private Builder(String url, String token) {
      this.urls.add(url);
      this.token = token;
    }

    public Builder fallbackUrl(String url) { urls.add(url); return this; }
    public Builder tlsCa(Path pem) { tlsCa = pem; return this; }
    public Builder maxStaleness(Duration d) { maxStaleness = d; return this; }
    public Builder maxClockSkew(Duration d) { maxClockSkew = d; return this; }
    public Builder cacheCapacity(int n) { cacheCapacity = n; return this; }
    public Builder revokedCapacity(int n) { revokedCapacity = n; return this; }
    public Builder backoff(Duration min, Duration max) { backoffMin = min; backoffMax = max; return this; }
    public Builder callTimeout(Duration d) { callTimeout = d; return this; }
    public Builder onRevocation(Consumer<Revocation> hook) { onRevocation = hook; return this; }

    public Config build() {
      return new Config(urls, token, tlsCa, maxStaleness, maxClockSkew, cacheCapacity,
          revokedCapacity, backoffMin, backoffMax, callTimeout, onRevocation);
    }
  }
}
