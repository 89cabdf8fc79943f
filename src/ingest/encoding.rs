//! Compressed request bodies: `Content-Encoding: gzip` or `zstd`, as log and event shippers
//! send them. A body is decompressed in memory under the same size limit as an uncompressed
//! one, so a small body cannot expand without bound.

use super::api::ApiError;
use axum::http::{HeaderMap, header};
use bytes::Bytes;
use std::io::Read;

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
    pub fn of(headers: &HeaderMap) -> Result<BodyEncoding, ApiError> {
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
            _ => Err(ApiError::UnsupportedEncoding(name)),
        }
    }

    /// Whether the body must be decompressed.
    pub fn is_compressed(self) -> bool {
        self != BodyEncoding::Identity
    }

    /// The body as sent by the client, decompressed; more than `limit` bytes once decompressed
    /// is a 413, a corrupt body a 400.
    pub fn decode(self, body: Bytes, limit: usize) -> Result<Bytes, ApiError> {
        let (name, reader): (&str, Box<dyn Read + '_>) = match self {
            BodyEncoding::Identity => return Ok(body),
            BodyEncoding::Gzip => ("gzip", Box::new(flate2::read::MultiGzDecoder::new(&body[..]))),
            BodyEncoding::Zstd => {
                let decoder = zstd::Decoder::new(&body[..]).map_err(|e| corrupt("zstd", &e))?;
                ("zstd", Box::new(decoder))
            }
        };
        let mut decoded = Vec::new();
        reader
            .take(limit as u64 + 1)
            .read_to_end(&mut decoded)
            .map_err(|e| corrupt(name, &e))?;
        if decoded.len() > limit {
            return Err(ApiError::DecodedTooLarge(limit));
        }
        Ok(decoded.into())
    }
}

fn corrupt(name: &str, error: &std::io::Error) -> ApiError {
    ApiError::Malformed(format!("cannot decompress the {name} body: {error}"))
}
