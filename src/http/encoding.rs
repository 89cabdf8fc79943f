//! Compressed request bodies: `Content-Encoding: gzip` or `zstd`, as log and event shippers
//! send them. A body is decompressed in memory under the same size limit as an uncompressed
//! one, so a small body cannot expand without bound.

use axum::http::{HeaderMap, header};
use bytes::Bytes;
use std::io::Read;
use thiserror::Error;

/// Why a body's encoding could not be read.
#[derive(Debug, Error)]
pub enum EncodingError {
    /// `Content-Encoding` names an encoding shardgate does not read (415).
    #[error("unsupported content encoding {0}; send gzip, zstd or an uncompressed body")]
    Unsupported(String),
    /// The body decompresses to more than the limit (413).
    #[error("request body decompresses to more than the limit of {0} bytes")]
    TooLarge(usize),
    /// The compressed data is corrupt (400).
    #[error("cannot decompress the {encoding} body: {cause}")]
    Corrupt {
        /// `gzip` or `zstd`.
        encoding: &'static str,
        /// What the decoder found.
        cause: std::io::Error,
    },
}

/// Bytes decompressed (and accounted for) at a time.
const DECODE_PIECE: usize = 64 * 1024;

/// How a request body is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyEncoding {
    /// Not compressed.
    Identity,
    /// gzip (one member or several).
    Gzip,
    /// Zstandard.
    Zstd,
}

impl BodyEncoding {
    /// The encoding `Content-Encoding` names; an encoding shardgate does not read is a 415.
    pub fn of(headers: &HeaderMap) -> Result<BodyEncoding, EncodingError> {
        let Some(value) = headers.get(header::CONTENT_ENCODING) else {
            return Ok(BodyEncoding::Identity);
        };
        let name = String::from_utf8_lossy(value.as_bytes())
            .trim()
            .to_ascii_lowercase();
        match name.as_str() {
            "" | "identity" => Ok(BodyEncoding::Identity),
            "gzip" | "x-gzip" => Ok(BodyEncoding::Gzip),
            "zstd" => Ok(BodyEncoding::Zstd),
            _ => Err(EncodingError::Unsupported(name)),
        }
    }

    /// The body as sent by the client, decompressed; more than `limit` bytes once decompressed
    /// is a 413, a corrupt body a 400. `reserve` is called with the size of each decompressed
    /// piece before it is kept, so the caller can account for the memory (or refuse).
    pub fn decode<E: From<EncodingError>>(
        self,
        body: Bytes,
        limit: usize,
        mut reserve: impl FnMut(usize) -> Result<(), E>,
    ) -> Result<Bytes, E> {
        let (name, reader): (&str, Box<dyn Read + '_>) = match self {
            BodyEncoding::Identity => return Ok(body),
            BodyEncoding::Gzip => ("gzip", Box::new(flate2::read::MultiGzDecoder::new(&body[..]))),
            BodyEncoding::Zstd => {
                let decoder = zstd::Decoder::new(&body[..]).map_err(|e| corrupt("zstd", e))?;
                ("zstd", Box::new(decoder))
            }
        };
        let mut reader = reader;
        let mut decoded = Vec::new();
        let mut piece = vec![0; DECODE_PIECE];
        loop {
            let n = reader.read(&mut piece).map_err(|e| corrupt(name, e))?;
            if n == 0 {
                return Ok(decoded.into());
            }
            if decoded.len() + n > limit {
                return Err(EncodingError::TooLarge(limit).into());
            }
            reserve(n)?;
            decoded.extend_from_slice(&piece[..n]);
        }
    }
}

fn corrupt(encoding: &'static str, cause: std::io::Error) -> EncodingError {
    EncodingError::Corrupt { encoding, cause }
}
