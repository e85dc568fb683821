//! One span and one log line per RPC (method, caller, status code, latency), and the RPC
//! metrics. The status of a successful call is only known from the response trailers, so the
//! response body is watched until it ends.

use std::{
    pin::Pin,
    task::{ready, Context, Poll},
    time::Instant,
};

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body::{Body as HttpBody, Frame, SizeHint};
use tonic::{body::Body, Code, Status};
use tower::{Layer, Service};
use tracing::{field::Empty, Instrument, Span};

use crate::metrics::Metrics;

#[derive(Clone)]
pub struct ObserveLayer {
    metrics: Metrics,
}

impl ObserveLayer {
    pub fn new(metrics: Metrics) -> Self {
        ObserveLayer { metrics }
    }
}

impl<S> Layer<S> for ObserveLayer {
    type Service = Observe<S>;

    fn layer(&self, inner: S) -> Observe<S> {
        Observe {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Observe<S> {
    inner: S,
    metrics: Metrics,
}

type BoxFuture<T> = Pin<Box<dyn std::future::Future<Output = T> + Send>>;

impl<S> Service<Request<Body>> for Observe<S>
where
    S: Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Response<Body>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let method = request.uri().path().to_owned();
        // `caller` is recorded by the auth layer, which runs inside this span.
        let span = tracing::info_span!("rpc", method = %method, caller = Empty, code = Empty, latency_ms = Empty);
        let future = span.in_scope(|| inner.call(request));
        let finish = Finish {
            method,
            started: Instant::now(),
            span: span.clone(),
            metrics: self.metrics.clone(),
        };
        Box::pin(
            async move {
                let response = future.await?;
                match status_of(response.headers()) {
                    // Trailers-only response (an error, usually): the status is already here.
                    Some(code) => {
                        finish.done(code);
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

fn status_of(headers: &HeaderMap) -> Option<Code> {
    let value = headers
        .get("grpc-status")?
        .to_str()
        .ok()?
        .parse::<i32>()
        .ok()?;
    Some(Code::from_i32(value))
}

struct Finish {
    method: String,
    started: Instant,
    span: Span,
    metrics: Metrics,
}

impl Finish {
    fn done(self, code: Code) {
        let seconds = self.started.elapsed().as_secs_f64();
        let code = code_name(code);
        let method = if super::auth::is_known_method(&self.method) {
            self.method.as_str()
        } else {
            "unknown"
        };
        self.metrics.rpc(method, &code, seconds);
        // Recorded on the span, so that tools reading spans see them too; the line shows them
        // with the span's method and caller.
        self.span.record("code", code.as_str());
        self.span.record("latency_ms", seconds * 1e3);
        tracing::info!(parent: &self.span, "rpc");
    }
}

/// `NotFound` -> `NOT_FOUND`, as the gRPC spec spells codes.
fn code_name(code: Code) -> String {
    let mut name = String::new();
    for (i, c) in format!("{code:?}").chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            name.push('_');
        }
        name.push(c.to_ascii_uppercase());
    }
    name
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
                finish.done(Code::Cancelled);
            }
        }
    }
}

impl HttpBody for ObservedBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        let code = match &frame {
            Some(Ok(frame)) => frame
                .trailers_ref()
                .map(|t| status_of(t).unwrap_or(Code::Unknown)),
            Some(Err(status)) => Some(status.code()),
            None => Some(Code::Unknown),
        };
        if let Some(code) = code {
            if let Some(finish) = this.finish.take() {
                finish.done(code);
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
    #[test]
    fn codes_are_spelled_as_the_spec_does() {
        assert_eq!(super::code_name(tonic::Code::Ok), "OK");
        assert_eq!(super::code_name(tonic::Code::NotFound), "NOT_FOUND");
        assert_eq!(
            super::code_name(tonic::Code::ResourceExhausted),
            "RESOURCE_EXHAUSTED"
        );
    }
}
