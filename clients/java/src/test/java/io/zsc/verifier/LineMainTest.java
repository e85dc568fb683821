package io.zsc.verifier;

import io.grpc.Status;
import java.time.Duration;
import java.util.Map;

/** The line protocol's parsing and rendering, and the status table (no server needed). */
final class LineMainTest {
  private LineMainTest() {}

  static void configComesFromTheEnvironmentWithTheProtocolsDefaults() {
    Config config = LineMain.config(Map.of("ZSC_URLS", "http://127.0.0.1:1, http://127.0.0.1:2",
        "ZSC_TOKEN", "t"));
    Check.equal(2, config.urls().size(), "a fallback");
    Check.equal(Duration.ofMillis(2000), config.maxStaleness(), "max_staleness");
    Check.equal(Duration.ofMillis(250), config.maxClockSkew(), "max_clock_skew");
    Check.equal(10_000, config.cacheCapacity(), "capacity");
    boolean refused = false;
    try {
      LineMain.config(Map.of("ZSC_URLS", "http://x:1", "ZSC_MAX_STALENESS_MS", "100",
          "ZSC_MAX_CLOCK_SKEW_MS", "100"));
    } catch (IllegalArgumentException e) {
      refused = true;
    }
    Check.isTrue(refused, "a skew not below the staleness is refused");
  }

  static void theStatusTableRejectsOnlyWhatSaysNoAndFailsClosedOnTheRest() {
    Check.equal("REJECT", LineMain.render(Verifier.classify(Status.UNAUTHENTICATED)), "unauthenticated");
    Check.equal("REJECT", LineMain.render(Verifier.classify(Status.INVALID_ARGUMENT)), "invalid");
    for (Status status : new Status[] {Status.UNAVAILABLE, Status.DEADLINE_EXCEEDED,
        Status.RESOURCE_EXHAUSTED, Status.INTERNAL, Status.PERMISSION_DENIED}) {
      Check.equal("UNAVAILABLE", LineMain.render(Verifier.classify(status)), status.getCode().name());
    }
  }

  static void malformedRequestsGetAnErrorLineAndStatsIsOneJsonLine() {
    Verifier verifier = Verifier.start(Config.builder("http://127.0.0.1:9", "t").build());
    try {
      Check.equal("ERROR usage: verify EMAIL KEY", LineMain.handle(verifier, "verify a@b"), "arity");
      Check.isTrue(LineMain.handle(verifier, "hello").startsWith("ERROR "), "unknown");
      Check.isTrue(LineMain.handle(verifier, "").startsWith("ERROR "), "empty");
      Check.equal(null, LineMain.handle(verifier, "quit"), "quit");
      String stats = LineMain.handle(verifier, "stats");
      Check.isTrue(stats.startsWith("{\"hits\":0,\"misses\":0,\"cached_keys\":0,\"applied_sequence\":null,"
          + "\"store_id\":null,\"connected\":false,\"fresh\":false,\"flushes\":0}"), stats);
      // Nothing listens on port 9: fail closed, never accept.
      Check.equal("UNAVAILABLE", LineMain.handle(verifier, "verify a@b.example zsc_x"), "closed");
    } finally {
      verifier.close();
    }
  }
}
