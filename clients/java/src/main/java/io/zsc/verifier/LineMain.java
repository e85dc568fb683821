package io.zsc.verifier;

import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.time.Duration;
import java.util.Arrays;
import java.util.List;
import java.util.Map;

/**
 * The Verifier line protocol (docs/verifier.md): the conformance kit runs this as a child
 * process. Configuration from the environment ({@code ZSC_URLS}, {@code ZSC_TOKEN}, {@code
 * ZSC_TLS_CA}, {@code ZSC_MAX_STALENESS_MS}, {@code ZSC_MAX_CLOCK_SKEW_MS}, {@code
 * ZSC_CACHE_CAPACITY}); one request per stdin line, exactly one answer line per request on
 * stdout, flushed. stderr carries logs, never a secret.
 */
public final class LineMain {
  private LineMain() {}

  public static void main(String[] args) throws IOException {
    PrintStream out = new PrintStream(System.out, false, StandardCharsets.UTF_8);
    Verifier verifier;
    try {
      verifier = Verifier.start(config(System.getenv()));
    } catch (RuntimeException e) {
      System.err.println("zsc verifier: cannot start: " + e.getMessage());
      System.exit(2);
      return;
    }
    answer(out, "READY");
    var in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
    String line;
    while ((line = in.readLine()) != null) {
      String reply = handle(verifier, line);
      if (reply == null) {
        break;
      }
      answer(out, reply);
    }
    verifier.close();
    System.exit(0);
  }

  static Config config(Map<String, String> env) {
    String urls = env.getOrDefault("ZSC_URLS", "");
    List<String> list = Arrays.stream(urls.split(",")).map(String::trim).filter(s -> !s.isEmpty()).toList();
    if (list.isEmpty()) {
      throw new IllegalArgumentException("ZSC_URLS is empty");
    }
    Config.Builder builder = Config.builder(list.get(0), env.getOrDefault("ZSC_TOKEN", ""))
        .maxStaleness(Duration.ofMillis(number(env, "ZSC_MAX_STALENESS_MS", 2000)))
        .maxClockSkew(Duration.ofMillis(number(env, "ZSC_MAX_CLOCK_SKEW_MS", 250)))
        .cacheCapacity((int) number(env, "ZSC_CACHE_CAPACITY", 10_000));
    list.subList(1, list.size()).forEach(builder::fallbackUrl);
    String ca = env.get("ZSC_TLS_CA");
    if (ca != null && !ca.isEmpty()) {
      builder.tlsCa(Path.of(ca));
    }
    return builder.build();
  }

  private static long number(Map<String, String> env, String name, long fallback) {
    String value = env.get(name);
    if (value == null || value.isEmpty()) {
      return fallback;
    }
    try {
      return Long.parseLong(value.trim());
    } catch (NumberFormatException e) {
      throw new IllegalArgumentException(name + " is not a number: " + value);
    }
  }

  /** The answer line to one request line; null for {@code quit}. */
  static String handle(Verifier verifier, String line) {
    String[] words = line.trim().split("\\s+");
    switch (words[0]) {
      case "verify":
        if (words.length != 3) {
          return "ERROR usage: verify EMAIL KEY";
        }
        Verification verification = verifier.verify(words[1], words[2]);
        if (verification instanceof Verification.Unavailable unavailable) {
          // Why, for whoever reads the kit's logs (a status carries no key or token).
          System.err.println("zsc verifier: unavailable: " + unavailable.status().getCode() + " "
              + unavailable.status().getDescription());
        }
        return render(verification);
      case "stats":
        return words.length == 1 ? verifier.stats().toJson() : "ERROR usage: stats";
      case "quit":
        return words.length == 1 ? null : "ERROR usage: quit";
      default:
        return "ERROR unknown request (verify EMAIL KEY | stats | quit)";
    }
  }

  static String render(Verification verification) {
    if (verification instanceof Verification.Accepted accepted) {
      return "ACCEPT " + accepted.orgId() + " " + accepted.keyId();
    }
    if (verification instanceof Verification.Rejected) {
      return "REJECT";
    }
    return "UNAVAILABLE";
  }

  private static void answer(PrintStream out, String line) {
    out.print(line);
    out.print('\n');
    out.flush();
  }
}
