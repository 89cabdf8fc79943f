//! Hot keys: partition keys whose rows would saturate the one shard their position maps to.
//! Each table's requests feed a heavy-hitter sketch per window (sampled per request by
//! [`crate::routing::sample`]; [`sketch`], [`detector`], run by [`watch`]); a
//! key above a share of its shard's rows and an absolute rate for several windows in a row is
//! hot, and is spread over salted ring positions ([`crate::routing::salt`]) by a split recorded
//! in the catalog and published ([`split`]).

pub mod cap;
pub mod detector;
pub mod sketch;
pub mod split;
pub mod values;
pub mod watch;

pub use detector::{Candidate, Detector, WindowCollector, WindowCounts};
pub use sketch::{Counter, SpaceSaving};
pub use split::Splitter;
pub use watch::{HotKeyWatch, WatchedKey, skew};
