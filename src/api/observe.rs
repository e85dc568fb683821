//! One span per RPC (method, caller), the RPC metrics, and the log line that ends a call (status
//! code, latency). The status of a successful call is only known from the response trailers,
//! so the response body is watched until it ends.
//!
//! Which calls get a line (at the default level), as [`Line::of`] decides:
//! - mutations, streams, and any call slower than [`SLOW_CALL`]: always (info);
//! - server faults (INTERNAL, UNKNOWN, DATA_LOSS): always (warn), with the status message;
//! - every other failure is a refusal the client caused (bad token, bad input, over a limit):
//!   info with the status message, through the shared [`Throttle`], so a flood of refused
//!   calls writes a bounded number of lines (metrics still count every one);
//! - successful reads (Get*, List*, ValidateKey, Health/Check): debug, or info with
//!   `--log-reads`. At thousands of reads a second a line each would be most of their cost.

use std::{
    pin::Pin,
    task::{ready, Context, Poll},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{HeaderMap, Request};
use http_body::{Body as HttpBody, SizeHint};
use tonic::{body::Body, Code, Status};
use tower::Layer;
use tracing::{field::Empty, Instrument, Span};

use super::layer::{Around, Called, Inner, Polled, Wrapped};
use super::lines::{is_read, SLOW_CALL};
use crate::metrics::Metrics;
use crate::telemetry::Throttle;

#[derive(Clone)]
pub struct ObserveLayer {
    log: LogPolicy,
}

/// What decides whether a finished call gets a line.
#[derive(Clone)]
struct LogPolicy {
    metrics: Metrics,
    refusals: Throttle,
    log_reads: bool,
}

impl ObserveLayer {
    pub fn new(metrics: Metrics, refusals: Throttle, log_reads: bool) -> Self {
        ObserveLayer {
            log: LogPolicy {
                metrics,
                refusals,
                log_reads,
            },
        }
    }
}

impl<S> Layer<S> for ObserveLayer {
    type Service = Wrapped<S, Self>;

    fn layer(&self, inner: S) -> Self::Service {
        Wrapped::new(inner, self.clone())
    }
}

impl Around for ObserveLayer {
    fn call<S: Inner>(&self, mut inner: S, request: Request<Body>) -> Called<S::Error> {
        let method = request.uri().path().to_owned();
        // `caller` is recorded by the auth layer, which runs inside this span; `code` and
        // `latency_ms` only when spans are exported (`Finish::done`).
        let span = tracing::info_span!(
            "rpc",
            method = %method,
            caller = Empty,
            code = Empty,
            latency_ms = Empty
        );
        if crate::trace::enabled() {
            crate::trace::continue_from(&span, request.headers());
        }
        let future = span.in_scope(|| inner.call(request));
        let finish = Finish {
            method,
            started: Instant::now(),
            span: span.clone(),
            log: self.log.clone(),
        };
        Box::pin(
            async move {
                let response = future.await?;
                match code_of(response.headers()) {
                    // Trailers-only response (an error, usually): the status is already here.
                    Some(code) => {
                        if let Some(reason) = response.headers().get(super::status::WRITE_REFUSED) {
                            finish
                                .log
                                .metrics
                                .write_refused(reason.to_str().unwrap_or("other"));
                        }
                        finish.done(code, || message_of(response.headers()));
                        Ok(response)
                    }
                    None => Ok(response.map(|body| {
                        Body::new(ObservedBody {
                            inner: body,
                            finish: Some(finish),
                        })
                    })),
                }
            }
            .instrument(span),
        )
    }
}

fn code_of(headers: &HeaderMap) -> Option<Code> {
    let value = headers
        .get("grpc-status")?
        .to_str()
        .ok()?
        .parse::<i32>()
        .ok()?;
    Some(Code::from_i32(value))
}

/// The status message of a failed call (only decoded for failures: it allocates).
fn message_of(headers: &HeaderMap) -> String {
    Status::from_header_map(headers)
        .map(|status| status.message().to_owned())
        .unwrap_or_default()
}

struct Finish {
    method: String,
    started: Instant,
    span: Span,
    log: LogPolicy,
}

/// How a finished call is logged.
#[derive(Debug, PartialEq, Eq)]
enum Line {
    Always,
    Fault,
    Refusal,
    Read,
}

impl Line {
    fn of(method: &str, code: Code, elapsed: Duration) -> Line {
        match code {
            Code::Ok if elapsed >= SLOW_CALL => Line::Always,
            Code::Ok if is_read(method) => Line::Read,
            Code::Ok => Line::Always,
            Code::Internal | Code::Unknown | Code::DataLoss => Line::Fault,
            _ => Line::Refusal,
        }
    }
}

impl Finish {
    fn done(self, code: Code, message: impl FnOnce() -> String) {
        let elapsed = self.started.elapsed();
        let seconds = elapsed.as_secs_f64();
        let name = code_name(code);
        let method = super::auth::known_method(&self.method).unwrap_or("unknown");
        self.log.metrics.rpc(method, name, seconds);
        // The line's own fields, beside the span's method and caller: recorded on the span, the
        // log layer would format them for every call, lines or none (~5% of a read's CPU).
        let ms = seconds * 1e3;
        let span = &self.span;
        if crate::trace::enabled() {
            span.record("code", name).record("latency_ms", ms);
        }
        match Line::of(&self.method, code, elapsed) {
            Line::Always => tracing::info!(parent: span, code = name, latency_ms = ms, "rpc"),
            Line::Read if self.log.log_reads => {
                tracing::info!(parent: span, code = name, latency_ms = ms, "rpc")
            }
            Line::Read => tracing::debug!(parent: span, code = name, latency_ms = ms, "rpc"),
            Line::Fault => {
                let reason = message();
                tracing::warn!(parent: span, code = name, latency_ms = ms, reason, "rpc failed")
            }
            Line::Refusal => {
                if self.log.refusals.allow() {
                    let reason = message();
                    tracing::info!(parent: span, code = name, latency_ms = ms, reason, "rpc refused")
                }
            }
        }
    }
}

/// The code as the gRPC spec spells it (`NOT_FOUND`).
fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

pin_project_lite::pin_project! {
    struct ObservedBody {
        #[pin]
        inner: Body,
        finish: Option<Finish>,
    }

    impl PinnedDrop for ObservedBody {
        fn drop(this: Pin<&mut Self>) {
            // The client went away before the response ended.
            if let Some(finish) = this.project().finish.take() {
                finish.done(Code::Cancelled, || "the client went away".to_owned());
            }
        }
    }
}

impl HttpBody for ObservedBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Polled {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        // The message is only read for a call that failed (`Finish::done` asks): it allocates.
        let ended = match &frame {
            Some(Ok(frame)) => frame
                .trailers_ref()
                .map(|trailers| (code_of(trailers).unwrap_or(Code::Unknown), Some(trailers))),
            Some(Err(status)) => Some((status.code(), None)),
            None => Some((Code::Unknown, None)),
        };
        if let Some((code, trailers)) = ended {
            if let Some(finish) = this.finish.take() {
                let message = || match (&frame, trailers) {
                    (_, Some(trailers)) => message_of(trailers),
                    (Some(Err(status)), None) => status.message().to_owned(),
                    _ => String::new(),
                };
                finish.done(code, message);
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{Line, SLOW_CALL};
    use tonic::Code;

    #[test]
    fn reads_are_quiet_and_mutations_streams_and_slow_calls_are_not() {
        let fast = Duration::from_millis(1);
        for read in [
            "/zsc.v1.KeyService/ValidateKey",
            "/zsc.v1.KeyService/GetKeyInfo",
            "/zsc.v1.UserService/ListOrgs",
            "/zsc.v1.UserService/GetUser",
            "/grpc.health.v1.Health/Check",
        ] {
            assert_eq!(Line::of(read, Code::Ok, fast), Line::Read, "{read}");
            assert_eq!(Line::of(read, Code::Ok, SLOW_CALL), Line::Always, "{read}");
            assert_eq!(
                Line::of(read, Code::Unauthenticated, fast),
                Line::Refusal,
                "{read}"
            );
        }
        for other in [
            "/zsc.v1.KeyService/RegenerateKey",
            "/zsc.v1.UserService/DeactivateUser",
            "/zsc.v1.AccessService/DeleteServiceAccount",
            "/zsc.v1.KeyService/WatchRevocations",
            "/grpc.health.v1.Health/Watch",
        ] {
            assert_eq!(Line::of(other, Code::Ok, fast), Line::Always, "{other}");
        }
        assert_eq!(
            Line::of("/zsc.v1.KeyService/GetKeyInfo", Code::Internal, fast),
            Line::Fault
        );
    }

    #[test]
    fn codes_are_spelled_as_the_spec_does() {
        // Every code: tonic's variant name, split at its capitals.
        for value in 0..=16 {
            let code = tonic::Code::from_i32(value);
            let mut spelled = String::new();
            for (i, c) in format!("{code:?}").chars().enumerate() {
                if c.is_ascii_uppercase() && i > 0 {
                    spelled.push('_');
                }
                spelled.push(c.to_ascii_uppercase());
            }
            assert_eq!(super::code_name(code), spelled);
        }
        assert_eq!(super::code_name(tonic::Code::Ok), "OK");
        assert_eq!(super::code_name(tonic::Code::NotFound), "NOT_FOUND");
        assert_eq!(
            super::code_name(tonic::Code::ResourceExhausted),
            "RESOURCE_EXHAUSTED"
        );
    }
}
