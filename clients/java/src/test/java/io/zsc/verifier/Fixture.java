package io.zsc.verifier;

import io.grpc.ManagedChannel;
import io.grpc.Metadata;
import io.grpc.netty.GrpcSslContexts;
import io.grpc.netty.NettyChannelBuilder;
import io.grpc.stub.AbstractStub;
import io.grpc.stub.MetadataUtils;
import io.zsc.v1.AccessServiceGrpc;
import io.zsc.v1.CreateOrgRequest;
import io.zsc.v1.CreateServiceAccountRequest;
import io.zsc.v1.CreateUserRequest;
import io.zsc.v1.Edition;
import io.zsc.v1.GenerateKeyRequest;
import io.zsc.v1.KeyServiceGrpc;
import io.zsc.v1.Profile;
import io.zsc.v1.RegenerateKeyRequest;
import io.zsc.v1.Role;
import io.zsc.v1.UserServiceGrpc;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.concurrent.TimeUnit;

/**
 * What the smoke test and the benchmarks need from a live zsc, made with the generated Java
 * clients (no grpcurl needed): {@code setup HOST:PORT DATA_DIR} creates an org, its
 * administrator, a console and a consumer account and the org's key, and prints them as shell
 * assignments; {@code regenerate HOST:PORT CONSOLE_TOKEN ORG_ID EMAIL} regenerates the key and
 * prints the new one. For tests and benches only: it prints secrets.
 */
public final class Fixture {
  private Fixture() {}

  public static void main(String[] args) throws Exception {
    String[] hostPort = args[1].split(":");
    ManagedChannel channel = channel(hostPort[0], Integer.parseInt(hostPort[1]));
    try {
      switch (args[0]) {
        case "setup" -> setup(channel, Files.readString(Path.of(args[2], "operator.token")).trim());
        case "regenerate" -> {
          var keys = as(KeyServiceGrpc.newBlockingStub(channel), args[2]);
          String key = keys.regenerateKey(RegenerateKeyRequest.newBuilder()
              .setOrgId(args[3]).setActorEmail(args[4]).build()).getKey();
          System.out.println(key);
        }
        default -> throw new IllegalArgumentException("setup | regenerate");
      }
    } finally {
      channel.shutdownNow().awaitTermination(5, TimeUnit.SECONDS);
    }
  }

  /** Plain text, or TLS trusting the CA in the file {@code $ZSC_TLS_CA} when that is set. */
  static ManagedChannel channel(String host, int port) throws java.io.IOException {
    NettyChannelBuilder builder = NettyChannelBuilder.forAddress(host, port);
    String ca = System.getenv("ZSC_TLS_CA");
    if (ca == null || ca.isEmpty()) {
      return builder.usePlaintext().build();
    }
    return builder.sslContext(GrpcSslContexts.forClient().trustManager(new java.io.File(ca)).build()).build();
  }

  private static void setup(ManagedChannel channel, String operator) {
    String suffix = Long.toString(System.nanoTime(), 36);
    String email = "ada-" + suffix + "@acme.example";
    var users = as(UserServiceGrpc.newBlockingStub(channel), operator);
    String orgId = users.createOrg(CreateOrgRequest.newBuilder().setName("Acme " + suffix)
        .setEdition(Edition.EDITION_ENTERPRISE).build()).getOrgId();
    users.createUser(CreateUserRequest.newBuilder().setOrgId(orgId).setEmail(email)
        .setDisplayName("Ada").setProfile(Profile.PROFILE_ADMINISTRATOR).build());
    var access = as(AccessServiceGrpc.newBlockingStub(channel), operator);
    String console = access.createServiceAccount(CreateServiceAccountRequest.newBuilder()
        .setName("console-" + suffix).setRole(Role.ROLE_CONSOLE).build()).getToken();
    String consumer = access.createServiceAccount(CreateServiceAccountRequest.newBuilder()
        .setName("desk-" + suffix).setRole(Role.ROLE_CONSUMER).build()).getToken();
    var keys = as(KeyServiceGrpc.newBlockingStub(channel), console);
    String key = keys.generateKey(GenerateKeyRequest.newBuilder().setOrgId(orgId)
        .setActorEmail(email).build()).getKey();
    System.out.println("ORG_ID=" + orgId);
    System.out.println("EMAIL=" + email);
    System.out.println("KEY=" + key);
    System.out.println("CONSOLE_TOKEN=" + console);
    System.out.println("CONSUMER_TOKEN=" + consumer);
  }

  static <S extends AbstractStub<S>> S as(S stub, String token) {
    Metadata bearer = new Metadata();
    bearer.put(Metadata.Key.of("authorization", Metadata.ASCII_STRING_MARSHALLER), "Bearer " + token);
    return stub.withInterceptors(MetadataUtils.newAttachHeadersInterceptor(bearer));
  }
}
