package io.zsc.verifier;

/** What the cache knows about a key (never the key itself). */
record Entry(String email, String keyId, String orgId, String orgName) {}
