package io.zsc.verifier;

import java.lang.reflect.InvocationTargetException;
import java.lang.reflect.Method;
import java.lang.reflect.Modifier;
import java.util.Objects;

/**
 * A tiny test runner (no JUnit on these machines' CI without Maven Central): runs every static
 * no-argument method of the test classes, prints each one's outcome, and exits non-zero if any
 * failed. Assertions are the helpers below, not the {@code assert} keyword (off by default).
 */
public final class Check {
  private Check() {}

  static void isTrue(boolean condition, String what) {
    if (!condition) {
      throw new AssertionError(what);
    }
  }

  static void equal(Object expected, Object actual, String what) {
    if (!Objects.equals(expected, actual)) {
      throw new AssertionError(what + ": expected " + expected + ", got " + actual);
    }
  }

  public static void main(String[] args) throws Exception {
    Class<?>[] suites = {KeyHashTest.class, CacheTest.class, StateTest.class, LineMainTest.class};
    int passed = 0;
    int failed = 0;
    for (Class<?> suite : suites) {
      for (Method test : suite.getDeclaredMethods()) {
        if (!Modifier.isStatic(test.getModifiers()) || test.getParameterCount() != 0
            || test.getReturnType() != void.class
            || Modifier.isPrivate(test.getModifiers())) {
          continue;
        }
        String name = suite.getSimpleName() + "." + test.getName();
        try {
          test.invoke(null);
          passed++;
          System.out.println("ok   " + name);
        } catch (InvocationTargetException e) {
          failed++;
          System.out.println("FAIL " + name + ": " + e.getCause());
        }
      }
    }
    System.out.println(passed + " passed, " + failed + " failed");
    System.exit(failed == 0 && passed > 0 ? 0 : 1);
  }
}
