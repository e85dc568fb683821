package io.zsc.verifier;

import io.grpc.ManagedChannel;
import io.grpc.Metadata;
import io.grpc.netty.GrpcSslContexts;
import io.grpc.netty.NettyChannelBuilder;
import io.grpc.stub.MetadataUtils;
import io.zsc.v1.ConfirmationServiceGrpc;
import io.zsc.v1.KeyServiceGrpc;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.net.URI;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;

/** A channel per replica, and which one is in use (the Rust Verifier's {@code Replicas}). */
final class Replicas {
  /** grpc-java's floor for client keepalive pings (it raises anything lower to this). */
  private static final long KEEPALIVE_SECONDS = 10;
  private static final long KEEPALIVE_TIMEOUT_SECONDS = 5;

  private final List<ManagedChannel> channels = new ArrayList<>();
  private final List<KeyServiceGrpc.KeyServiceStub> async = new ArrayList<>();
  private final List<KeyServiceGrpc.KeyServiceBlockingStub> blocking = new ArrayList<>();
  private final List<ConfirmationServiceGrpc.ConfirmationServiceBlockingStub> reporters = new ArrayList<>();
  private final AtomicInteger current = new AtomicInteger();

  Replicas(Config config) {
    Metadata bearer = new Metadata();
    // Exactly what the Rust client sends (src/client.rs: `authorization: Bearer <token>`).
    bearer.put(
        Metadata.Key.of("authorization", Metadata.ASCII_STRING_MARSHALLER),
        "Bearer " + config.token().trim());
    for (String url : config.urls()) {
      ManagedChannel channel = channel(url, config);
      channels.add(channel);
      async.add(KeyServiceGrpc.newStub(channel)
          .withInterceptors(MetadataUtils.newAttachHeadersInterceptor(bearer)));
      blocking.add(KeyServiceGrpc.newBlockingStub(channel)
          .withInterceptors(MetadataUtils.newAttachHeadersInterceptor(bearer)));
      reporters.add(ConfirmationServiceGrpc.newBlockingStub(channel)
          .withInterceptors(MetadataUtils.newAttachHeadersInterceptor(bearer)));
    }
  }

  /**
   * A lazily connecting channel. grpc-java sends no keepalive pings unless told to: without them
   * a connection whose peer vanished (no FIN, no RST) is noticed only by the stream watchdog.
   * The flow-control window is fixed (at grpc-java's default size) because auto-tuning it sends a
   * BDP PING after each response that carries data: every ValidateKey of a miss would cost a
   * second round trip and a second wake-up of both ends, for a window the small messages here
   * never fill.
   */
  private static ManagedChannel channel(String url, Config config) {
    URI uri = URI.create(url);
    boolean tls = "https".equals(uri.getScheme());
    if (!tls && !"http".equals(uri.getScheme())) {
      throw new IllegalArgumentException(url + ": the URL must start with http:// or https://");
    }
    int port = uri.getPort() != -1 ? uri.getPort() : (tls ? 443 : 80);
    NettyChannelBuilder builder = NettyChannelBuilder.forAddress(uri.getHost(), port)
        .keepAliveTime(KEEPALIVE_SECONDS, TimeUnit.SECONDS)
        .keepAliveTimeout(KEEPALIVE_TIMEOUT_SECONDS, TimeUnit.SECONDS)
        .keepAliveWithoutCalls(true)
        .flowControlWindow(NettyChannelBuilder.DEFAULT_FLOW_CONTROL_WINDOW);
    if (!tls) {
      return builder.usePlaintext().build();
    }
    try {
      var ssl = GrpcSslContexts.forClient();
      if (config.tlsCa() != null) {
        ssl.trustManager(config.tlsCa().toFile());
      }
      return builder.sslContext(ssl.build()).build();
    } catch (IOException e) {
      throw new UncheckedIOException(url + ": TLS setup failed", e);
    }
  }

  /** The replica in use. */
  int current() {
    return Math.floorMod(current.get(), channels.size());
  }

  KeyServiceGrpc.KeyServiceStub async(int replica) {
    return async.get(replica);
  }

  KeyServiceGrpc.KeyServiceBlockingStub blocking(int replica) {
    return blocking.get(replica);
  }

  ConfirmationServiceGrpc.ConfirmationServiceBlockingStub reporter(int replica) {
    return reporters.get(replica);
  }

  /** Replica {@code failed} failed: use the next one (unless another caller already moved on). */
  void failOver(int failed) {
    current.compareAndSet(failed, (failed + 1) % channels.size());
  }

  int size() {
    return channels.size();
  }

  void shutdown() {
    for (ManagedChannel channel : channels) {
      channel.shutdownNow();
    }
  }
}
