//! The bit reader of the codec parsers is ferrocast-media's (one reader for the server's
//! parameter-set parsers and the container writers).

pub use ferrocast_media::bits::{unescape_rbsp, BitReader, EndOfData};
