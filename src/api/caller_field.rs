//! The `caller` field of a call's span, recorded only when a line can show it.
//!
//! The log layer formats a span field as it is recorded (~1,800 instructions a call, measured
//! with callgrind: a tenth of what a ValidateKey costs beyond a Health/Check). A read that
//! succeeds quickly writes no line at the default level (`observe.rs`), so for reads
//! ([`lines::quiet_on_success`]) the auth layer records the caller only once the call turns
//! out to be one whose line is written: it failed, it was slow, or it was cut short (a timeout,
//! a client gone). Every other call gets it as soon as it is authenticated, as before.
//!
//! [`lines::quiet_on_success`]: super::lines::quiet_on_success

use std::time::Instant;

use http::Response;
use tracing::Span;

use super::lines::SLOW_CALL;
use crate::domain::SecretHash;
use crate::store::Store;

/// A read's caller, not yet on its span.
pub struct CallerField {
    span: Span,
    store: Store,
    /// Whose name to record: the token's holder is looked up again (a map lookup) in the rare
    /// case that it is needed, so that the common case copies no name.
    token: SecretHash,
    started: Instant,
    pending: bool,
}

impl CallerField {
    pub fn later(span: Span, store: Store, token: SecretHash) -> Self {
        CallerField {
            span,
            store,
            token,
            started: Instant::now(),
            pending: true,
        }
    }

    /// The call's response head is here: the caller goes on the span if the call failed or
    /// was slow, and is never needed otherwise.
    pub fn settle<B, E>(mut self, response: &Result<Response<B>, E>) {
        let failed = match response {
            Ok(response) => response
                .headers()
                .get("grpc-status")
                .is_some_and(|code| code != "0"),
            Err(_) => true,
        };
        if failed || self.started.elapsed() >= SLOW_CALL {
            self.record();
        }
        self.pending = false;
    }

    fn record(&mut self) {
        if std::mem::take(&mut self.pending) {
            if let Ok(caller) = self.store.holder_of(self.token) {
                self.span.record("caller", caller.name.as_str());
            }
        }
    }
}

/// Dropped before [`CallerField::settle`]: the call was cut short, and its line is written.
impl Drop for CallerField {
    fn drop(&mut self) {
        self.record();
    }
}
