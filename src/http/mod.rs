//! The HTTP layer's shared pieces. Today: the guarantee that every refusal either listener sends
//! carries the API's JSON error body ([`error_body`]).

pub mod error_body;
