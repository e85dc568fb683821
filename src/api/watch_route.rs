//! KeyService with WatchRevocations served from messages that are already encoded.
//!
//! The generated server would encode every message once per stream. Here each revocation and
//! each heartbeat checkpoint is encoded once for all streams (`tail.rs`), and this route serves
//! the WatchRevocations path itself with a codec whose encoder copies those bytes; every other
//! KeyService method goes to the generated server. The request is decoded by the zsc.v1 codec,
//! so bad input is answered as everywhere else.

use std::{
    convert::Infallible,
    sync::Arc,
    task::{Context, Poll},
};

use bytes::{BufMut, Bytes};
use futures_util::future::BoxFuture;
use tonic::{
    body::Body,
    codec::{BufferSettings, Codec, EncodeBuf, Encoder},
    server::{Grpc, NamedService, ServerStreamingService},
    Status,
};
use tower::Service;

use super::keys::KeyApi;
use super::watch::WatchStream;
use crate::proto::{self as pb, codec::ZscDecoder, key_service_server::KeyServiceServer};

const WATCH_PATH: &str = "/zsc.v1.KeyService/WatchRevocations";

/// The generated KeyService server, with WatchRevocations taken off its hands.
#[derive(Clone)]
pub struct KeyRoutes {
    generated: KeyServiceServer<KeyApi>,
    api: Arc<KeyApi>,
    max_message_bytes: usize,
}

impl KeyRoutes {
    pub fn new(api: KeyApi, max_message_bytes: usize) -> Self {
        let api = Arc::new(api);
        KeyRoutes {
            generated: KeyServiceServer::from_arc(api.clone())
                .max_decoding_message_size(max_message_bytes),
            api,
            max_message_bytes,
        }
    }
}

impl NamedService for KeyRoutes {
    const NAME: &'static str = <KeyServiceServer<KeyApi> as NamedService>::NAME;
}

impl Service<http::Request<Body>> for KeyRoutes {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        if request.uri().path() != WATCH_PATH {
            // Boxed already: boxing it again would cost every call an allocation.
            return self.generated.call(request);
        }
        let watch = Watch(self.api.clone());
        let max = self.max_message_bytes;
        Box::pin(async move {
            let mut grpc = Grpc::new(EncodedCodec).apply_max_message_size_config(Some(max), None);
            Ok(grpc.server_streaming(watch, request).await)
        })
    }
}

struct Watch(Arc<KeyApi>);

impl ServerStreamingService<pb::WatchRevocationsRequest> for Watch {
    type Response = Bytes;
    type ResponseStream = WatchStream;
    type Future = BoxFuture<'static, Result<tonic::Response<WatchStream>, Status>>;

    fn call(&mut self, request: tonic::Request<pb::WatchRevocationsRequest>) -> Self::Future {
        let api = self.0.clone();
        Box::pin(async move { api.watch(request).await })
    }
}

/// Decodes WatchRevocationsRequest like every zsc.v1 request; encodes a message that is
/// already encoded by copying it.
struct EncodedCodec;

/// A stream's encode buffer starts this small and grows as needed: an idle subscriber should
/// not hold tonic's default 8 KiB.
const ENCODE_BUFFER: usize = 512;
/// tonic's default: how much a stream encodes before it yields to the others.
const YIELD_THRESHOLD: usize = 32 * 1024;

impl Codec for EncodedCodec {
    type Encode = Bytes;
    type Decode = pb::WatchRevocationsRequest;
    type Encoder = Copying;
    type Decoder = ZscDecoder<pb::WatchRevocationsRequest>;

    fn encoder(&mut self) -> Copying {
        Copying
    }

    fn decoder(&mut self) -> Self::Decoder {
        ZscDecoder::default()
    }
}

struct Copying;

impl Encoder for Copying {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        buf.put_slice(&item);
        Ok(())
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::new(ENCODE_BUFFER, YIELD_THRESHOLD)
    }
}
