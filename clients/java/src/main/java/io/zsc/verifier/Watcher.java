package io.zsc.verifier;

import io.grpc.Status;
import io.grpc.stub.ClientCallStreamObserver;
import io.grpc.stub.ClientResponseObserver;
import io.zsc.v1.RevocationEvent;
import io.zsc.v1.WatchRevocationsRequest;
import io.zsc.v1.WatchRevocationsResponse;
import java.lang.System.Logger.Level;
import java.time.Duration;
import java.time.Instant;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.ThreadLocalRandom;
import java.util.concurrent.TimeUnit;

/**
 * The Verifier's background thread: follow WatchRevocations, apply each message in order,
 * reconnect (the Rust Verifier's watcher.rs). One thread applies everything, so the state sees
 * the stream's messages in the order the server sent them.
 */
final class Watcher {
  private static final System.Logger LOG = System.getLogger("io.zsc.verifier");
  /** What the stream's observer hands the thread when the call ends. */
  private record End(Status status) {}

  private final Verifier verifier;
  private final Config config;
  /** No message for this long: the stream is dead though the connection may look alive. */
  private final long quietLimitNanos;
  private final Thread thread;
  private volatile boolean closed;
  private volatile ClientCallStreamObserver<WatchRevocationsRequest> call;
  /** Failed attempts since a message last arrived: the backoff's exponent (this thread only). */
  private int failures;

  Watcher(Verifier verifier, Config config) {
    this.verifier = verifier;
    this.config = config;
    this.quietLimitNanos = Math.max(config.maxStaleness().toNanos() * 2, Duration.ofSeconds(2).toNanos());
    this.thread = new Thread(this::run, "zsc-verifier-watch");
    this.thread.setDaemon(true);
  }

  void start() {
    thread.start();
  }

  void close() {
    closed = true;
    thread.interrupt();
    var open = call;
    if (open != null) {
      open.cancel("verifier closed", null);
    }
    try {
      thread.join(TimeUnit.SECONDS.toMillis(5));
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
    }
  }

  private void run() {
    while (!closed) {
      // The replica in use; after a failure the next one, from the same cursor.
      int replica = verifier.replicas.current();
      WatchRevocationsRequest.Builder request = WatchRevocationsRequest.newBuilder();
      synchronized (verifier.state) {
        if (verifier.state.applied != null) {
          request.setAfterSequence(verifier.state.applied);
        }
        request.setStoreId(verifier.state.storeId == null ? "" : verifier.state.storeId);
      }
      Status outcome = follow(replica, request.build());
      verifier.connected = false;
      synchronized (verifier.state) {
        verifier.state.disconnected();
      }
      if (closed) {
        return;
      }
      if (outcome.getCode() == Status.Code.OUT_OF_RANGE) {
        // Our cursor means nothing to this server's log: start over from its head.
        LOG.log(Level.WARNING, "revocation cursor out of range ({0}); flushing the cache",
            outcome.getDescription());
        synchronized (verifier.state) {
          verifier.state.flush();
        }
        verifier.flushes.incrementAndGet();
        continue;
      }
      LOG.log(Level.DEBUG, "revocation stream lost: {0}", outcome);
      verifier.replicas.failOver(replica);
      failures = Math.min(failures + 1, 1 << 16);
      try {
        TimeUnit.NANOSECONDS.sleep(backoff(config, failures));
      } catch (InterruptedException e) {
        return;
      }
    }
  }

  /** Applies messages until the stream ends or goes quiet; returns how it ended. */
  private Status follow(int replica, WatchRevocationsRequest request) {
    BlockingQueue<Object> inbox = new LinkedBlockingQueue<>();
    verifier.replicas.async(replica).watchRevocations(request,
        new ClientResponseObserver<WatchRevocationsRequest, WatchRevocationsResponse>() {
          @Override
          public void beforeStart(ClientCallStreamObserver<WatchRevocationsRequest> stream) {
            call = stream;
          }

          @Override
          public void onNext(WatchRevocationsResponse message) {
            inbox.add(message);
          }

          @Override
          public void onError(Throwable t) {
            inbox.add(new End(Status.fromThrowable(t)));
          }

          @Override
          public void onCompleted() {
            inbox.add(new End(Status.OK.withDescription("revocation stream ended")));
          }
        });
    boolean reported = false;
    try {
      while (true) {
        Object next = inbox.poll(quietLimitNanos, TimeUnit.NANOSECONDS);
        if (next == null) {
          call.cancel("revocation stream went quiet", null);
          return Status.DEADLINE_EXCEEDED.withDescription("revocation stream went quiet");
        }
        if (next instanceof End end) {
          return end.status();
        }
        verifier.connected = true;
        failures = 0;
        reported = apply((WatchRevocationsResponse) next, reported);
        verifier.publishApplied();
      }
    } catch (InterruptedException e) {
      call.cancel("verifier closed", null);
      return Status.CANCELLED;
    }
  }

  /** Applies one message; returns whether an unusable checkpoint was already logged. */
  private boolean apply(WatchRevocationsResponse message, boolean reported) {
    switch (message.getEventCase()) {
      case REVOCATION -> {
        RevocationEvent event = message.getRevocation();
        Entry evicted;
        synchronized (verifier.state) {
          evicted = verifier.state.revoke(event.getSequence(), event.getKeyId());
        }
        if (config.onRevocation() != null) {
          config.onRevocation().accept(new Config.Revocation(event.getSequence(), event.getKeyId(),
              event.getOrgId(), event.getOwnerEmail(), event.getReason().name(), evicted != null));
        }
        return reported;
      }
      case CHECKPOINT -> {
        var checkpoint = message.getCheckpoint();
        Long serverTime = checkpoint.hasServerTime()
            ? checkpoint.getServerTime().getSeconds() * 1_000_000_000L + checkpoint.getServerTime().getNanos()
            : null;
        var seen = new State.Checkpoint(checkpoint.getSequence(), checkpoint.getStoreId(),
            checkpoint.getDurableHead(), serverTime);
        long arrival = System.nanoTime();
        Instant wall = Instant.now();
        State.Grant grant;
        synchronized (verifier.state) {
          grant = verifier.state.checkpoint(seen, arrival, wall.getEpochSecond() * 1_000_000_000L + wall.getNano());
        }
        return report(grant, reported);
      }
      default -> {
        return reported;
      }
    }
  }

  /**
   * Logs, once per stream, why its checkpoints leave the cache unused: an operator should hear
   * about a clock or a path that makes every verify go to the server.
   */
  private static boolean report(State.Grant grant, boolean reported) {
    String why = switch (grant.kind()) {
      case UNTIL, BEHIND -> null;
      case NO_SERVER_TIME -> "the server sends no server_time (an older zsc)";
      case TOO_OLD -> "checkpoints arrive up to " + Duration.ofNanos(grant.nanos()) + " old (slow or buffering path)";
      case CLOCK_AHEAD -> "the server's clock is " + Duration.ofNanos(grant.nanos()) + " ahead of ours, beyond max_clock_skew";
    };
    if (why == null || reported) {
      return reported;
    }
    LOG.log(Level.WARNING, "the revocation stream cannot vouch for the cache; verifying with the server: {0}", why);
    return true;
  }

  /** Full jitter: a random delay up to min(cap, min * 2^failures), in nanoseconds. */
  static long backoff(Config config, int failures) {
    long ceiling = Math.min(
        config.backoffMin().toNanos() << Math.min(failures, 16), config.backoffMax().toNanos());
    return ThreadLocalRandom.current().nextLong(Math.max(ceiling, 0) + 1);
  }
}
