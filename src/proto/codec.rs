//! The codec of every zsc.v1 service and client (build.rs names it with `codec_path`): tonic's
//! prost codec, except for whose fault undecodable bytes are.
//!
//! tonic's codec answers bytes that are not valid protobuf (`ff ff ff`, a string field that is
//! not UTF-8) with INTERNAL, before any handler runs, so a client's malformed request looked
//! like a server fault to the caller and in `zsc_rpc_requests_total`. A request the server
//! cannot decode is the caller's bad input: INVALID_ARGUMENT, naming the message it should have
//! been. A response a client cannot decode is still INTERNAL, as tonic has it.
//!
//! Which side decodes is known from the message type: every type the generated code decodes is
//! listed below as a request or a response, and a type missing from the lists fails to compile.

use std::marker::PhantomData;

use prost::Message;
use tonic::{
    codec::{BufferSettings, Codec, DecodeBuf, Decoder},
    Status,
};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

/// A message one side of a zsc.v1 call decodes, and what it means when its bytes are bad.
pub trait Decoded {
    /// The status for bytes that are not a valid encoding of this message.
    fn undecodable(error: &str) -> Status;
}

macro_rules! requests {
    ($($message:ident),* $(,)?) => {$(
        impl Decoded for super::$message {
            fn undecodable(error: &str) -> Status {
                Status::invalid_argument(format!(
                    "request is not a valid zsc.v1.{}: {error}",
                    stringify!($message)
                ))
            }
        }
    )*};
}

macro_rules! responses {
    ($($message:ident),* $(,)?) => {$(
        impl Decoded for super::$message {
            fn undecodable(error: &str) -> Status {
                Status::internal(error.to_owned())
            }
        }
    )*};
}

requests!(
    CreateOrgRequest,
    GetOrgRequest,
    ListOrgsRequest,
    CreateUserRequest,
    GetUserRequest,
    ListUsersRequest,
    UpdateUserProfileRequest,
    DeactivateUserRequest,
    ReactivateUserRequest,
    GenerateKeyRequest,
    RegenerateKeyRequest,
    RevokeKeyRequest,
    GetKeyInfoRequest,
    ValidateKeyRequest,
    WatchRevocationsRequest,
    CreateServiceAccountRequest,
    ListServiceAccountsRequest,
    DeleteServiceAccountRequest,
    ListAuditEventsRequest,
    BackupRequest,
    ReportAppliedRequest,
    GetRevocationConfirmationsRequest,
);

responses!(
    Org,
    ListOrgsResponse,
    User,
    ListUsersResponse,
    GenerateKeyResponse,
    RevokeKeyResponse,
    KeyInfo,
    ValidateKeyResponse,
    WatchRevocationsResponse,
    CreateServiceAccountResponse,
    ListServiceAccountsResponse,
    DeleteServiceAccountResponse,
    ListAuditEventsResponse,
    BackupResponse,
    ReportAppliedResponse,
    GetRevocationConfirmationsResponse,
);

/// Encodes `T` and decodes `U` exactly as [`ProstCodec`] does; only a decode failure's status
/// differs (see the module docs).
pub struct ZscCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for ZscCodec<T, U> {
    fn default() -> Self {
        ZscCodec(PhantomData)
    }
}

impl<T, U> Codec for ZscCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Decoded + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ZscDecoder<U>;

    fn encoder(&mut self) -> ProstEncoder<T> {
        ProstEncoder::default()
    }

    fn decoder(&mut self) -> ZscDecoder<U> {
        ZscDecoder::default()
    }
}

pub struct ZscDecoder<U>(ProstDecoder<U>);

impl<U: Message + Default + Decoded + Send + 'static> Default for ZscDecoder<U> {
    fn default() -> Self {
        ZscDecoder(ProstCodec::<U, U>::raw_decoder(BufferSettings::default()))
    }
}

impl<U: Message + Default + Decoded> Decoder for ZscDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        // ProstDecoder fails only when prost cannot decode the bytes.
        self.0
            .decode(buf)
            .map_err(|status| U::undecodable(status.message()))
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.0.buffer_settings()
    }
}
