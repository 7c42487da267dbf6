//! prost's gRPC codec with small buffers, for the `ExternalScaler` service and its client.
//!
//! tonic gives every response stream an encode buffer (8 KiB by default) that lives as long as
//! the stream, and KEDA keeps a `StreamIsActive` open for every ScaledObject: 10,000 apps held
//! 80 MiB of buffers for messages of a few bytes. Buffers still grow for a larger message.
//!
//! Within the crate it may use no other module (a leaf).

use std::marker::PhantomData;

use prost::Message;
use tonic::codec::{BufferSettings, Codec};
use tonic_prost::{ProstDecoder, ProstEncoder};

/// Each stream's first buffer: a `ScaledObjectRef` with its metadata fits, a response many times.
const BUFFER_BYTES: usize = 512;
/// tonic's own: how much is encoded before the stream yields to the runtime.
const YIELD_BYTES: usize = 32 << 10;

/// The codec the generated service and client use (`tonic_prost_build`'s `codec_path`).
#[derive(Debug, Clone)]
pub struct SmallBuffers<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for SmallBuffers<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<T, U> Codec for SmallBuffers<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::new(BufferSettings::new(BUFFER_BYTES, YIELD_BYTES))
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder::new(BufferSettings::new(BUFFER_BYTES, YIELD_BYTES))
    }
}
