package io.zsc.verifier;

import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.zsc.v1.Org;
import io.zsc.v1.ValidateKeyRequest;
import io.zsc.v1.ValidateKeyResponse;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.LongAdder;

/**
 * What a consuming Java service embeds to check "admin email + ZSC key" fast, and drop a revoked
 * key within milliseconds: the Rust {@code zsc::verifier::Verifier}, with the same rules.
 *
 * <ul>
 *   <li>{@link #verify} answers from a local cache when it can, otherwise calls ValidateKey and
 *       caches the success (bounded, clock eviction, keyed by a keyed hash of the key; the key
 *       itself is never kept). A hit takes no lock; the rules ({@link State}) are applied under
 *       one.
 *   <li>A background thread follows WatchRevocations, resuming from the store id and sequence it
 *       last applied; each revocation evicts its key_id. OUT_OF_RANGE flushes the cache and
 *       resubscribes from the head; a lost or silent stream reconnects to the next replica with
 *       jittered backoff.
 *   <li>Fail safe, judged by the server's clock: the cache answers only while the last complete
 *       checkpoint is younger than max_staleness (padded by max_clock_skew); otherwise every
 *       verify goes to the server, and fails closed if it cannot.
 * </ul>
 *
 * <p>The guarantee: if this machine's clock and the server's differ by at most max_clock_skew, a
 * key whose revocation was acknowledged at time r is never answered from the cache at or after
 * r + max_staleness, whatever the network or a proxy does.
 */
public final class Verifier implements AutoCloseable {
  private final Config config;
  final Replicas replicas;
  /** The rules; every call on it holds its monitor. */
  final State state;
  /** What a hit reads: the state's cache, without its lock. */
  private final Cache cache;
  private final KeyHash.Hasher hasher = KeyHash.Hasher.random();
  private final LongAdder hits = new LongAdder();
  private final LongAdder misses = new LongAdder();
  final AtomicLong flushes = new AtomicLong();
  volatile boolean connected;
  private final Watcher watcher;
  /** Reports the applied sequence to the server (the console's "who has dropped it"). */
  private final Reporter reporter;

  private Verifier(Config config) {
    this.config = config;
    this.state = new State(config.cacheCapacity(), config.revokedCapacity(),
        config.maxStaleness().toNanos(), config.maxClockSkew().toNanos());
    this.cache = state.cache();
    this.replicas = new Replicas(config);
    this.reporter = new Reporter(replicas);
    this.watcher = new Watcher(this, config);
  }

  /** Hands the reporter the applied sequence; called by the watcher after each message. */
  void publishApplied() {
    Long applied;
    String storeId;
    synchronized (state) {
      applied = state.applied;
      storeId = state.storeId;
    }
    if (applied != null) {
      reporter.applied(applied, storeId);
    }
  }

  /**
   * Starts the Verifier; the stream connects in the background (the cache is bypassed until it
   * has vouched for it).
   */
  public static Verifier start(Config config) {
    Verifier verifier = new Verifier(config);
    verifier.watcher.start();
    return verifier;
  }

  /** Checks "owner email + key". Blocks for a ValidateKey call on a miss. */
  public Verification verify(String email, String key) {
    if (email == null || key == null || email.isEmpty() || key.isEmpty()) {
      return new Verification.Rejected(true, "email and key are required");
    }
    KeyHash hash = hasher.hash(key);
    Verification.Accepted hit = hit(hash, email);
    return hit != null ? hit : miss(hash, email, key);
  }

  /**
   * A cached answer for {@code hash} and {@code email}, if the cache is fresh: no lock, no write
   * that another thread's hit reads. Freshness is read after the entry, so a hit that races a
   * disconnect or a flush answers only if it was still fresh when the entry was found.
   */
  Verification.Accepted hit(KeyHash hash, String email) {
    Entry entry = cache.get(hash);
    if (entry == null || !sameEmail(entry.email(), email) || !cache.fresh(System.nanoTime())) {
      return null;
    }
    hits.increment();
    return new Verification.Accepted(entry.orgId(), entry.orgName(), entry.keyId(), entry.email(), true);
  }

  KeyHash hash(String key) {
    return hasher.hash(key);
  }

  /**
   * The same text, or the same but for ASCII case (which the server folds). Not {@link
   * String#equalsIgnoreCase}: that folds non-ASCII letters too (the Kelvin sign matches 'k').
   */
  private static boolean sameEmail(String cached, String given) {
    if (cached.equals(given)) {
      return true;
    }
    if (cached.length() != given.length()) {
      return false;
    }
    for (int i = 0; i < cached.length(); i++) {
      char a = cached.charAt(i);
      char b = given.charAt(i);
      if (a != b && (a >= 0x80 || b >= 0x80 || asciiLower(a) != asciiLower(b))) {
        return false;
      }
    }
    return true;
  }

  private static char asciiLower(char c) {
    return c >= 'A' && c <= 'Z' ? (char) (c + 32) : c;
  }

  /** {@code verify} past the cache: ask the server, admit the success under the rules. */
  private Verification miss(KeyHash hash, String email, String key) {
    misses.increment();
    ValidateKeyRequest request = ValidateKeyRequest.newBuilder().setEmail(email).setKey(key).build();
    ValidateKeyResponse response;
    try {
      response = validateRemotely(request);
    } catch (StatusRuntimeException e) {
      return classify(e.getStatus());
    }
    Org org = response.getOrg();
    String owner = response.getOwnerEmail().isEmpty() ? email : response.getOwnerEmail();
    Entry entry = new Entry(owner, response.getKeyId(), org.getOrgId(), org.getName());
    synchronized (state) {
      state.admit(hash, entry, response.getSequence(), response.getStoreId());
    }
    return new Verification.Accepted(entry.orgId(), entry.orgName(), entry.keyId(), owner, false);
  }

  /**
   * Which ValidateKey failures mean "no" and which mean "cannot tell" (fail closed), as the Rust
   * Verifier maps them: UNAUTHENTICATED is the server's one answer for every wrong email, unknown
   * or revoked key, or owner no longer an admin; INVALID_ARGUMENT is a malformed key or email.
   * Every other code (UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, PERMISSION_DENIED for a
   * token without the right, ...) says nothing about the key: unavailable.
   */
  static Verification classify(Status status) {
    return switch (status.getCode()) {
      case UNAUTHENTICATED -> new Verification.Rejected(false, "invalid email or key");
      case INVALID_ARGUMENT -> new Verification.Rejected(true, String.valueOf(status.getDescription()));
      default -> new Verification.Unavailable(status);
    };
  }

  /** ValidateKey on the replica in use, then on the others in turn while one is unavailable. */
  private ValidateKeyResponse validateRemotely(ValidateKeyRequest request) {
    StatusRuntimeException last = Status.UNAVAILABLE.withDescription("no replica").asRuntimeException();
    for (int attempt = 0; attempt < replicas.size(); attempt++) {
      int replica = replicas.current();
      try {
        return replicas.blocking(replica)
            .withDeadlineAfter(config.callTimeout().toNanos(), TimeUnit.NANOSECONDS)
            .validateKey(request);
      } catch (StatusRuntimeException e) {
        last = e;
        if (e.getStatus().getCode() != Status.Code.UNAVAILABLE) {
          throw e;
        }
        replicas.failOver(replica);
      }
    }
    throw last;
  }

  public Stats stats() {
    synchronized (state) {
      return new Stats(hits.sum(), misses.sum(), state.size(), state.applied, state.storeId,
          connected, state.fresh(System.nanoTime()), flushes.get());
    }
  }

  /** Stops following the stream and closes the channels; verify then fails closed. */
  @Override
  public void close() {
    watcher.close();
    reporter.close();
    replicas.shutdown();
    synchronized (state) {
      state.disconnected();
    }
  }
}
