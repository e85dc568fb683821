package io.zsc.verifier;

import io.grpc.Status;

/** The answer to {@link Verifier#verify}: accepted, rejected, or unavailable (fail closed). */
public sealed interface Verification {
  /** The key is valid for this owner; {@code cached}: answered from the cache. */
  record Accepted(String orgId, String orgName, String keyId, String ownerEmail, boolean cached)
      implements Verification {}

  /**
   * The server says no: wrong email, unknown or revoked key, owner no longer an admin
   * (UNAUTHENTICATED), or a malformed key or email (INVALID_ARGUMENT, {@code malformed}).
   */
  record Rejected(boolean malformed, String reason) implements Verification {}

  /** The server could not be asked and the cache could not vouch: deny (fail closed). */
  record Unavailable(Status status) implements Verification {}
}
