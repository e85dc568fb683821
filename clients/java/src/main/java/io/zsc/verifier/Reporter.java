package io.zsc.verifier;

import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.zsc.v1.ReportAppliedRequest;
import java.lang.System.Logger.Level;
import java.util.concurrent.Executors;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.TimeUnit;

/**
 * Reports the revocation-log sequence this Verifier has applied (ConfirmationService's
 * ReportApplied), so that the console sees who has dropped a revoked key; the Rust Verifier's
 * reporter.rs, with the same rule: when the applied sequence moves, report at once if no report
 * was sent in the last second, else at the end of that second (with the latest sequence then).
 * The watcher only records the sequence ({@link #applied}, never blocks); a thread of its own
 * sends. A failed report is logged at most once a minute and retried a second later; a refusal
 * no retry can change (PERMISSION_DENIED, UNIMPLEMENTED, UNAUTHENTICATED) waits for the next move.
 */
final class Reporter {
  private static final System.Logger LOG = System.getLogger("io.zsc.verifier");
  private static final long EVERY_NANOS = TimeUnit.SECONDS.toNanos(1);
  private static final long TIMEOUT_SECONDS = 5;
  private static final long WARN_EVERY_NANOS = TimeUnit.MINUTES.toNanos(1);

  private final Replicas replicas;
  private final ScheduledExecutorService sender = Executors.newSingleThreadScheduledExecutor(r -> {
    Thread thread = new Thread(r, "zsc-verifier-report");
    thread.setDaemon(true);
    return thread;
  });
  // Guarded by this.
  private long latest;
  private String latestStore;
  private long sent;
  private String sentStore;
  private boolean scheduled;
  private boolean attempted;
  private long lastAttempt;
  // The sender thread's own.
  private boolean warned;
  private long lastWarning;

  Reporter(Replicas replicas) {
    this.replicas = replicas;
  }

  /** The watcher's news: the applied sequence and its store. Never waits. */
  synchronized void applied(long sequence, String storeId) {
    if (storeId == null || (sequence == latest && storeId.equals(latestStore))) {
      return;
    }
    latest = sequence;
    latestStore = storeId;
    schedule();
  }

  private void schedule() {
    if (scheduled || sender.isShutdown()) {
      return;
    }
    scheduled = true;
    long wait = attempted ? Math.max(0, lastAttempt + EVERY_NANOS - System.nanoTime()) : 0;
    sender.schedule(this::send, wait, TimeUnit.NANOSECONDS);
  }

  private void send() {
    long sequence;
    String store;
    synchronized (this) {
      scheduled = false;
      if (latest == sent && latestStore.equals(sentStore)) {
        return;
      }
      sequence = latest;
      store = latestStore;
      attempted = true;
      lastAttempt = System.nanoTime();
    }
    try {
      replicas.reporter(replicas.current())
          .withDeadlineAfter(TIMEOUT_SECONDS, TimeUnit.SECONDS)
          .reportApplied(ReportAppliedRequest.newBuilder()
              .setAppliedSequence(sequence).setStoreId(store).build());
      synchronized (this) {
        sent = sequence;
        sentStore = store;
      }
    } catch (StatusRuntimeException e) {
      Status.Code code = e.getStatus().getCode();
      long now = System.nanoTime();
      if (!warned || now - lastWarning >= WARN_EVERY_NANOS) {
        warned = true;
        lastWarning = now;
        LOG.log(Level.WARNING, "reporting the applied revocation sequence failed (logged at most once a minute): {0}",
            e.getStatus());
      }
      boolean hopeless = code == Status.Code.PERMISSION_DENIED || code == Status.Code.UNIMPLEMENTED
          || code == Status.Code.UNAUTHENTICATED;
      if (!hopeless) {
        synchronized (this) {
          schedule();
        }
      }
    }
  }

  void close() {
    sender.shutdownNow();
  }
}
